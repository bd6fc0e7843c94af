"""Archive safety: a hostile corpus is refused, the member is named, nothing is left behind."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError, UnsafeArchiveError


def allow(root: Path, **settings: Any) -> ArtifactSettings:
    """Settings that let file:// read below root (refused by default)."""
    return ArtifactSettings(file_roots=[root], **settings)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _fetch(archive: Path, dest: Path, **limits: int) -> str:
    return fetch_model(f"file://{archive}", dest, allow(archive.parent, **limits))


def test_good_tgz_unpacks_with_modes_and_internal_links(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "model.tar.gz", [
        _file("./model/weights.bin", b"w" * 1000),
        _file("model/run.sh", b"#!/bin/sh\n", 0o755),
        _link("model/alias.bin", "weights.bin", tarfile.SYMTYPE),
        _link("model/hard.bin", "model/weights.bin", tarfile.LNKTYPE),
    ], "w:gz")
    dest = tmp_path / "dest"
    digest = _fetch(archive, dest)
    assert (dest / "model" / "weights.bin").read_bytes() == b"w" * 1000
    assert (dest / "model" / "alias.bin").read_bytes() == b"w" * 1000
    assert not (dest / "model" / "alias.bin").is_symlink()
    assert (dest / "model" / "hard.bin").stat().st_nlink == 1
    assert stat.S_IMODE((dest / "model" / "run.sh").stat().st_mode) == 0o755
    with open_model(f"file://{archive}", allow(tmp_path)) as src:
        assert src.digest == digest
        files = {f.path: f for f in src.files()}
        assert sorted(files) == ["model/alias.bin", "model/hard.bin", "model/run.sh",
                                 "model/weights.bin"]
        with files["model/alias.bin"].open() as stream:
            assert stream.read() == b"w" * 1000
    with open_model(f"file://{archive}", allow(tmp_path), unpack_archives=False) as src:
        assert [f.path for f in src.files()] == ["model.tar.gz"]


def test_good_zip(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "m.zip", {"a/b.txt": b"hello", "c.txt": b"x"})
    dest = tmp_path / "dest"
    _fetch(archive, dest)
    assert (dest / "a" / "b.txt").read_bytes() == b"hello"


def test_unpack_false_keeps_the_archive(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "m.zip", {"c.txt": b"x"})
    fetch_model(f"file://{archive}", tmp_path / "d", allow(tmp_path), unpack=False)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["m.zip"]


HOSTILE_TAR = {
    "traversal": [_file("ok.txt", b"1"), _file("../evil.txt", b"x")],
    "traversal-nested": [_file("a/../../evil.txt", b"x")],
    "absolute": [_file("/etc/evil.txt", b"x")],
    "symlink-escape": [_link("link", "../../etc/passwd", tarfile.SYMTYPE)],
    "symlink-absolute": [_link("link", "/etc/passwd", tarfile.SYMTYPE)],
    "symlink-then-write": [_link("dir", "/tmp", tarfile.SYMTYPE), _file("dir/evil", b"x")],
    "hardlink-escape": [_link("hard", "../outside", tarfile.LNKTYPE)],
    "hardlink-absolute": [_link("hard", "/etc/passwd", tarfile.LNKTYPE)],
    "dangling-link": [_link("link", "missing", tarfile.SYMTYPE)],
    "device": [_link("dev", "", tarfile.CHRTYPE)],
    "fifo": [_link("fifo", "", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TAR))
def test_hostile_tar_refused_and_nothing_left(tmp_path: Path, case: str) -> None:
    archive = _tar(tmp_path / "m.tar", HOSTILE_TAR[case])
    dest = tmp_path / "dest"
    with pytest.raises(ArtifactError) as err:
        _fetch(archive, dest)
    assert str(archive) in str(err.value)
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tar"]
    assert not Path("/tmp/evil").exists()


def test_hostile_refused_in_existing_dest_keeps_old_content(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "m.tar", HOSTILE_TAR["traversal"])
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "previous.bin").write_text("old")
    with pytest.raises(UnsafeArchiveError, match=r"evil\.txt"):
        _fetch(archive, dest)
    assert [p.name for p in dest.iterdir()] == ["previous.bin"]


def test_zip_traversal_and_absolute(tmp_path: Path) -> None:
    for name in ("../evil", "/abs/evil", "C:/evil", "a\\..\\..\\evil"):
        archive = _zip(tmp_path / "m.zip", {"ok": b"1", name: b"x"})
        with pytest.raises(UnsafeArchiveError):
            _fetch(archive, tmp_path / "dest")
        assert not (tmp_path / "dest").exists()


def test_zip_symlink_escape(tmp_path: Path) -> None:
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="link"):
        _fetch(archive, tmp_path / "dest")


def test_zip_bomb_over_limit_by_actual_bytes(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"zeros.bin": b"\0" * (5 * 1024 * 1024)})
    assert archive.stat().st_size < 64 * 1024
    with pytest.raises(UnsafeArchiveError, match=r"zeros\.bin"):
        _fetch(archive, tmp_path / "dest", max_archive_bytes=1024 * 1024)
    assert not (tmp_path / "dest").exists()


def test_zip_bomb_with_lying_header(tmp_path: Path) -> None:
    """The central directory claims 10 bytes; the stream inflates to 5 MiB."""
    archive = _zip(tmp_path / "liar.zip", {"zeros.bin": b"\0" * (5 * 1024 * 1024)})
    raw = bytearray(archive.read_bytes())
    real = (5 * 1024 * 1024).to_bytes(4, "little")
    fake = (10).to_bytes(4, "little")
    raw = raw.replace(real, fake)
    archive.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError):
        _fetch(archive, tmp_path / "dest", max_archive_bytes=1024 * 1024)
    assert not (tmp_path / "dest").exists()


def test_tar_gz_bomb_over_limit(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "bomb.tgz", [_file("zeros", b"\0" * (3 * 1024 * 1024))], "w:gz")
    with pytest.raises(UnsafeArchiveError, match="zeros"):
        _fetch(archive, tmp_path / "dest", max_archive_bytes=1024 * 1024)


def test_too_many_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "many.zip", {f"f{i}": b"x" for i in range(20)})
    with pytest.raises(UnsafeArchiveError, match="max_archive_files"):
        _fetch(archive, tmp_path / "dest", max_archive_files=10)
    assert not (tmp_path / "dest").exists()


def test_file_dir_conflict(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "m.tar", [_file("a", b"1"), _file("a/b", b"2")])
    with pytest.raises(UnsafeArchiveError, match="conflicts"):
        _fetch(archive, tmp_path / "dest")


def test_corrupt_archive(tmp_path: Path) -> None:
    archive = tmp_path / "m.tgz"
    archive.write_bytes(b"not a tarball at all" * 10)
    with pytest.raises(ArtifactError, match=r"m\.tgz"):
        _fetch(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()

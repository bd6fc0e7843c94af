"""One small archive must not stop an agent: bombs, link bombs, endless downloads, and
archives with thousands of members (once quadratic: 2,000 members took 220 s).

The bombs are generated here, streamed, never stored: a 2 GiB-of-zeros tar.gz of
about 2 MB (gzip members are concatenated, each the same compressed MiB of zeros) and
a zip whose one member inflates to 512 MiB.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError, UnsafeArchiveError
from tests.security.conftest import Endpoint

MiB = 1024 * 1024


def _gzip_member(data: bytes) -> bytes:
    out = zlib.compressobj(9, zlib.DEFLATED, 31)  # a complete gzip member
    return out.compress(data) + out.flush()


def write_tar_gz_bomb(path: Path, size: int = 2048 * MiB) -> Path:
    """A tar.gz whose one member is `size` zero bytes, in about size/1000 bytes."""
    header = tarfile.TarInfo("weights.bin")
    header.size = size
    zeros = _gzip_member(b"\0" * MiB)
    with path.open("wb") as out:
        out.write(_gzip_member(header.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(size // MiB):
            out.write(zeros)
        out.write(_gzip_member(b"\0" * 1024))  # end-of-archive blocks
    return path


def write_zip_bomb(path: Path, size: int = 512 * MiB) -> Path:
    """A zip whose one member inflates to `size` zero bytes.

    The deflate stream is one compressed MiB of zeros repeated (each copy ends on a
    full flush, so copies are independent); the CRC is computed over the zeros.
    """
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(b"\0" * MiB) + packer.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(b"\0" * MiB, crc)
    compressed = len(block) * (size // MiB) + len(end)
    name = b"weights.bin"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, compressed, size,
                        len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                          compressed, size, len(name), 0, 0, 0, 0, 0o644 << 16, 0) + name
    with path.open("wb") as out:
        out.write(local)
        for _ in range(size // MiB):
            out.write(block)
        out.write(end)
        offset = out.tell()
        out.write(central)
        out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), offset, 0))
    return path


def _settings(root: Path, **kw: Any) -> ArtifactSettings:
    return ArtifactSettings(file_roots=[root], **kw)


def test_the_bombs_are_real(tmp_path: Path) -> None:
    """Guard for the tests below: the generated files are what they claim to be."""
    tgz = write_tar_gz_bomb(tmp_path / "b.tar.gz", 4 * MiB)
    with tarfile.open(tgz) as tar:
        [member] = tar.getmembers()
        assert member.size == 4 * MiB
        assert tar.extractfile(member).read() == b"\0" * (4 * MiB)  # type: ignore[union-attr]
    z = write_zip_bomb(tmp_path / "b.zip", 4 * MiB)
    with zipfile.ZipFile(z) as zf:
        assert zf.read("weights.bin") == b"\0" * (4 * MiB)
    assert (tmp_path / "b.tar.gz").stat().st_size < 16 * 1024


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_bombs_are_refused_before_anything_is_written(tmp_path: Path, kind: str) -> None:
    bomb = (write_tar_gz_bomb(tmp_path / "model.tar.gz") if kind == "tar.gz"
            else write_zip_bomb(tmp_path / "model.zip"))
    assert bomb.stat().st_size < 3 * MiB
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match="times its compressed size") as err:
        fetch_model(bomb.as_uri(), dest, _settings(tmp_path))
    assert "max_archive_ratio" in str(err.value) and "weights.bin" in str(err.value)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == [bomb.name]  # no staging left behind


def test_total_size_limit_holds_for_compressible_but_honest_archives(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"part-{i}.bin")
            info.size = MiB
            tar.addfile(info, io.BytesIO(b"x" * MiB))
    with pytest.raises(UnsafeArchiveError, match="max_archive_bytes"):
        fetch_model(archive.as_uri(), tmp_path / "d", _settings(tmp_path,
                                                                  max_archive_bytes=2 * MiB))
    fetch_model(archive.as_uri(), tmp_path / "d", _settings(tmp_path))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        "part-0.bin", "part-1.bin", "part-2.bin"]


def test_hard_link_bomb_is_refused(tmp_path: Path) -> None:
    """One 1 MiB file and 200 hard links to it: 201 MiB on disk from a ~1 MiB tar."""
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = MiB
        tar.addfile(info, io.BytesIO(bytes(range(256)) * 4096))
        for i in range(200):
            link = tarfile.TarInfo(f"copy-{i}.bin")
            link.type, link.linkname = tarfile.LNKTYPE, "weights.bin"
            tar.addfile(link)
    with pytest.raises(UnsafeArchiveError, match="times its compressed size"):
        fetch_model(archive.as_uri(), tmp_path / "d", _settings(tmp_path))
    assert not (tmp_path / "d").exists()


def test_thousands_of_members_are_read_in_one_pass(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 members of 17 KB: the archive is opened a fixed number of times (it was
    reopened, and the gzip stream decompressed from the start, for every member)."""
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for i in range(2000):
            info = tarfile.TarInfo(f"shards/{i:04d}.bin")
            info.size = 17 * 1024
            tar.addfile(info, io.BytesIO(i.to_bytes(2, "big") * (info.size // 2)))
    opened: list[str] = []
    real_open = tarfile.open

    def counting_open(*args: Any, **kwargs: Any) -> tarfile.TarFile:
        opened.append(str(args[0] if args else kwargs.get("name")))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(tarfile, "open", counting_open)
    fetch_model(archive.as_uri(), tmp_path / "d", _settings(tmp_path))
    assert len(opened) <= 2  # the table of contents, then the data
    assert (tmp_path / "d" / "shards" / "1999.bin").read_bytes()[:2] == (1999).to_bytes(2, "big")
    opened.clear()
    with open_model(archive.as_uri(), _settings(tmp_path)) as src:  # the image builder's path
        files = list(src.files())
        assert len(files) == 2000
        with files[-1].open() as stream:
            assert stream.read(2) == (1999).to_bytes(2, "big")
    assert len(opened) <= 2


def test_download_without_length_is_capped(endpoint: Callable[[], Endpoint],
                                           tmp_path: Path) -> None:
    """No Content-Length, no validator: the server streams forever (here: 8 MiB)."""
    server = endpoint()
    server.routes["/model.bin"] = (200, {}, 8 * MiB)
    with pytest.raises(ArtifactError, match=r"larger than 2097152 bytes.*max_archive_bytes"):
        fetch_model(f"{server.url}/model.bin", tmp_path / "d",
                    ArtifactSettings(max_archive_bytes=2 * MiB, retries=0))
    assert not (tmp_path / "d").exists()


def test_download_announcing_a_huge_length_is_refused_before_reading(
        endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    server = endpoint()
    server.body = b"x" * (3 * MiB)
    with pytest.raises(ArtifactError, match="max_archive_bytes"):
        fetch_model(f"{server.url}/model.bin", tmp_path / "d",
                    ArtifactSettings(max_archive_bytes=2 * MiB, retries=0))
    assert [s.method for s in server.seen] == ["HEAD"]

"""The model layer: a deterministic tar, hashed and compressed on the fly."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.errors import BuildError
from agent.images.layer import (
    AdaptiveGzip,
    DirectoryFile,
    DirectorySource,
    LayerProgress,
    LayerSink,
    compressor,
    write_model_tar,
)


class _Collect:
    """A BlobUpload stand-in that keeps the compressed bytes (unit tests only)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


def _layer(root: Path, kind: str = "gzip", model_path: str = "/mnt/models",
           uid: int = 0) -> tuple[bytes, str, str, LayerSink]:
    sink = LayerSink(None, kind, None)
    out = _Collect()
    sink.upload = out  # type: ignore[assignment]
    write_model_tar(list(DirectorySource(root).files()), model_path, sink, uid, uid)
    digest, diff_id = sink.close()
    return bytes(out.data), digest, diff_id, sink


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "b" / "c").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "b" / "c" / "w.bin").write_bytes(os.urandom(5000))
    (root / "b" / "run.sh").write_text("#!/bin/sh\n")
    (root / "b" / "run.sh").chmod(0o755)
    return root


def test_tar_layout_is_deterministic(model: Path) -> None:
    blob, digest, diff_id, sink = _layer(model)
    assert digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    tar_bytes = gzip.decompress(blob)
    assert diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    assert sink.size == len(tar_bytes) and sink.compressed_size == len(blob)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == ["mnt", "mnt/models", "mnt/models/a.txt", "mnt/models/b",
                         "mnt/models/b/c", "mnt/models/b/c/w.bin", "mnt/models/b/run.sh"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == ""
                   for m in members)
        modes = {m.name: m.mode for m in members}
        assert modes["mnt/models/b/run.sh"] == 0o755 and modes["mnt/models/a.txt"] == 0o644
        assert modes["mnt/models/b"] == 0o755
        assert tar.extractfile("mnt/models/b/c/w.bin").read() == \
            (model / "b" / "c" / "w.bin").read_bytes()  # type: ignore[union-attr]
    again = _layer(model)
    assert again[1:3] == (digest, diff_id)


def test_uid_gid_and_model_path(model: Path) -> None:
    blob, *_ = _layer(model, "none", "/opt/ml/model", uid=1000)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getmembers()[0].name == "opt"
        assert {m.uid for m in tar.getmembers()} == {1000}
        assert "opt/ml/model/a.txt" in tar.getnames()


def test_zstd_when_available(model: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    blob, _, diff_id, _ = _layer(model, "zstd")
    tar_bytes = zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    assert diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def test_zstd_missing_module_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_zstd(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "zstandard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zstd)
    with pytest.raises(BuildError, match="zstandard"):
        compressor("zstd", None)


def test_short_file_is_an_error(tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"123")
    lying = DirectoryFile("f", 10, 0o644, local)
    with pytest.raises(BuildError, match="ended 7 bytes early"):
        write_model_tar([lying], "/m", LayerSink(None, "none", None))


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b"])
def test_escaping_paths_are_refused(tmp_path: Path, path: str) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    with pytest.raises(BuildError, match="escapes"):
        write_model_tar([DirectoryFile(path, 1, 0o644, local)], "/m",
                        LayerSink(None, "none", None))


def test_progress_every_tenth_or_step() -> None:
    seen: list[dict[str, Any]] = []
    progress = LayerProgress(lambda m, **d: seen.append(d), 100 * 1024**2, 64 * 1024**2, None)
    for done in range(0, 100 * 1024**2 + 1, 1024**2):
        progress(done)
    assert 9 <= len(seen) <= 11
    big: list[dict[str, Any]] = []
    progress = LayerProgress(lambda m, **d: big.append(d), 1024**3, 64 * 1024**2, None)
    for done in range(0, 1024**3 + 1, 1024**2):
        progress(done)
    assert 15 <= len(big) <= 17  # every 64 MiB


def test_memory_stays_flat_with_a_large_stream() -> None:
    """A 256 MiB file goes through without the process growing by its size."""
    import resource

    class Zeros:
        path, size, mode = "big.bin", 256 * 1024**2, 0o644

        def open(self) -> Any:
            class Stream(io.RawIOBase):
                def readable(self) -> bool:
                    return True

                def readinto(self, buffer: Any) -> int:
                    buffer[:] = b"\0" * len(buffer)
                    return len(buffer)
            return io.BufferedReader(Stream())

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sink = LayerSink(None, "gzip", None)
    write_model_tar([Zeros()], "/m", sink)  # type: ignore[list-item]
    sink.close()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


def test_adaptive_gzip_stores_random_blocks_and_deflates_text() -> None:
    random_block = os.urandom(AdaptiveGzip.BLOCK)
    text = b"weights: 0.0 0.0 0.0\n" * (AdaptiveGzip.BLOCK // 21 + 7)
    packer = AdaptiveGzip()
    out = packer.compress(random_block[:1000]) + packer.compress(random_block[1000:] + text)
    out += packer.flush()
    assert gzip.decompress(out) == random_block + text  # multi-member gzip reads back whole
    assert len(out) < len(random_block) + len(text) // 10  # text deflated, random stored
    again = AdaptiveGzip()
    assert again.compress(random_block + text) + again.flush() == out  # deterministic
    empty = AdaptiveGzip()
    assert gzip.decompress(empty.flush()) == b""

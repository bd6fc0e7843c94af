"""The model layer: the model's files as one deterministic tar, hashed and compressed on the fly.

Sorted paths, mtime 0, fixed owner, every parent directory: the same model
gives the same bytes, so the layer's digest is stable. `LayerSink` hashes the
tar (diff-id) and feeds the compressed stream to a blob upload without ever
holding the model in memory. `DirectorySource` serves a local directory as a
model source (tests, bench).
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Protocol

from agent.errors import BuildError
from agent.images.upload import BlobUpload

READ_SIZE = 1024 * 1024
OCI_LAYER = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass(frozen=True)
class LayerResult:
    """A pushed layer."""

    digest: str
    diff_id: str
    size: int
    media_type: str
    uncompressed_size: int


def layer_media_type(compression: str) -> str:
    return OCI_LAYER[compression]


class ModelFileLike(Protocol):
    """What the builder needs of `agent.artifacts.ModelFile`."""

    path: str
    size: int
    mode: int

    def open(self) -> BinaryIO: ...


class ModelSourceLike(Protocol):
    """What the builder needs of `agent.artifacts.ModelSource` (a context manager)."""

    uri: str
    digest: str

    def files(self) -> Iterator[Any]: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class AdaptiveGzip:
    """gzip as a series of members, one per 4 MiB block; incompressible blocks are stored.

    Model weights barely compress (a few %), yet deflating them costs ~10x the
    time of moving them. Each block's first 64 KiB is test-compressed: when it
    saves less than `min_saving`, the block is written at level 0 (stored,
    ~20x faster), otherwise at `level`. The output is ordinary (multi-member)
    gzip, read by every layer consumer (Go's gzip reader, pigz, zcat), and
    deterministic: the choice depends only on the bytes.
    """

    BLOCK = 4 * 1024 * 1024
    SAMPLE = 64 * 1024
    PIECE = 1024 * 1024  # zlib is several times faster fed in pieces than in one 4 MiB call

    def __init__(self, level: int = 1, min_saving: float = 0.1) -> None:
        self.level = level
        self.min_saving = min_saving
        self._sample = bytearray()  # start of the next member, until its level is chosen
        self._packer: Any = None
        self._in_member = 0
        self._emitted = False

    def _open_member(self) -> bytes:
        sample = bytes(self._sample)
        self._sample.clear()
        saving = 1 - len(zlib.compress(sample, self.level)) / max(1, len(sample))
        level = self.level if saving >= self.min_saving else 0
        self._packer = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._in_member = 0
        self._emitted = True
        return self._feed(sample)

    def _feed(self, data: bytes | memoryview) -> bytes:
        out = []
        for start in range(0, len(data), self.PIECE):
            out.append(self._packer.compress(data[start:start + self.PIECE]))
        self._in_member += len(data)
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        out: list[bytes] = []
        view = memoryview(data)
        while view:
            if self._packer is None:
                take = self.SAMPLE - len(self._sample)
                self._sample += view[:take]
                view = view[take:]
                if len(self._sample) < self.SAMPLE:
                    break
                out.append(self._open_member())
                continue
            take = self.BLOCK - self._in_member
            out.append(self._feed(view[:take]))
            view = view[take:]
            if self._in_member >= self.BLOCK:
                out.append(self._packer.flush())
                self._packer = None
        return b"".join(out)

    def flush(self) -> bytes:
        out = []
        if self._sample or not self._emitted:
            out.append(self._open_member())
        if self._packer is not None:
            out.append(self._packer.flush())
            self._packer = None
        return b"".join(out)


def compressor(kind: str, level: int | None, adaptive: bool = False) -> _Compressor:
    """A streaming compressor; gzip output is deterministic (mtime 0 in the header)."""
    if kind == "none":
        return _Identity()
    if kind == "gzip" and adaptive:
        return AdaptiveGzip(1 if level is None else min(level, 9))
    if kind == "gzip":
        return zlib.compressobj(1 if level is None else min(level, 9), zlib.DEFLATED, 31)
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise BuildError(
                "images.compression is zstd but the 'zstandard' module is not installed: "
                "install management-agent[zstd] or use gzip"
            ) from None
        return zstandard.ZstdCompressor(level=3 if level is None else level).compressobj()
    raise BuildError(f"unknown compression {kind!r}")


class LayerSink:
    """Tar bytes in; hashes the tar (diff-id) and feeds the compressed stream to an upload.

    The compressed stream's digest is computed by the upload's sending thread
    (`BlobUpload.digest`), in parallel with tar + compression here; without an
    upload (tests) the sink hashes it itself.
    """

    def __init__(self, upload: BlobUpload | None, kind: str, level: int | None,
                 progress: Callable[[int], None] | None = None, adaptive: bool = False) -> None:
        self.upload = upload
        self._compressor = compressor(kind, level, adaptive)
        # uncompressed: the diff-id IS the blob digest, hashed once (by the upload's thread)
        self._diff = hashlib.sha256() if kind != "none" else None
        self._blob = hashlib.sha256() if upload is None else None
        self.size = 0
        self.compressed_size = 0
        self._progress = progress

    def write(self, data: bytes) -> None:
        if self._diff is not None:
            self._diff.update(data)
        self.size += len(data)
        self._emit(self._compressor.compress(data))
        if self._progress is not None:
            self._progress(self.size)

    def _emit(self, data: bytes) -> None:
        if data:
            self.compressed_size += len(data)
            if self._blob is not None:
                self._blob.update(data)
            if self.upload is not None:
                self.upload.write(data)

    def close(self) -> tuple[str, str]:
        """Flush; return (blob digest, diff id)."""
        self._emit(self._compressor.flush())
        if self._blob is not None:
            blob = "sha256:" + self._blob.hexdigest()
        else:
            assert self.upload is not None
            blob = self.upload.digest()
        return blob, blob if self._diff is None else "sha256:" + self._diff.hexdigest()


def _tar_header(name: str, kind: bytes, size: int, mode: int, uid: int, gid: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _safe_relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise BuildError(f"model file path {path!r} escapes the model directory")
    return relative


def write_model_tar(files: Iterator[ModelFileLike] | list[ModelFileLike], model_path: str,
                    sink: LayerSink, uid: int = 0, gid: int = 0) -> int:
    """Stream a deterministic tar of `files` under `model_path` into `sink`; count files.

    Sorted paths, mtime 0, uid/gid as given, file modes kept, every parent
    directory included (mode 0755) before its contents.
    """
    root = PurePosixPath("/", model_path)
    written_dirs: set[PurePosixPath] = set()
    count = 0

    def ensure_dir(directory: PurePosixPath) -> None:
        if directory == PurePosixPath("/") or directory in written_dirs:
            return
        ensure_dir(directory.parent)
        name = str(directory.relative_to("/")) + "/"
        sink.write(_tar_header(name, tarfile.DIRTYPE, 0, 0o755, uid, gid))
        written_dirs.add(directory)

    ensure_dir(root)
    for item in sorted(files, key=lambda f: f.path):
        target = root / _safe_relative(item.path)
        ensure_dir(target.parent)
        mode = (item.mode & 0o7777) or 0o644
        sink.write(_tar_header(str(target.relative_to("/")), tarfile.REGTYPE, item.size,
                               mode, uid, gid))
        remaining = item.size
        with item.open() as stream:
            while remaining:
                data = stream.read(min(READ_SIZE, remaining))
                if not data:
                    raise BuildError(
                        f"model file {item.path} ended {remaining} bytes early (size changed "
                        "while reading?)"
                    )
                remaining -= len(data)
                sink.write(data)
        padding = (-item.size) % tarfile.BLOCKSIZE
        if padding:
            sink.write(tarfile.NUL * padding)
        count += 1
    sink.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
    return count


@dataclass(frozen=True)
class DirectoryFile:
    """A ModelFile over a local file."""

    path: str
    size: int
    mode: int
    local: Path

    def open(self) -> BinaryIO:
        return self.local.open("rb")


class DirectorySource:
    """A ModelSource over a local directory (tests, bench; production uses agent.artifacts).

    The digest is sha256 over the sorted (path, mode, sha256(content)) lines.
    """

    def __init__(self, root: Path, digest: str | None = None) -> None:
        self.root = root
        self.uri = root.as_uri()
        self._digest = digest

    @property
    def digest(self) -> str:
        if self._digest is None:
            outer = hashlib.sha256()
            for item in self.files():
                inner = hashlib.sha256()
                with item.open() as stream:
                    while data := stream.read(READ_SIZE):
                        inner.update(data)
                outer.update(f"{item.path}\0{item.mode:o}\0{inner.hexdigest()}\n".encode())
            self._digest = "sha256:" + outer.hexdigest()
        return self._digest

    def files(self) -> Iterator[DirectoryFile]:
        for local in sorted(p for p in self.root.rglob("*") if p.is_file()):
            stat = local.stat()
            yield DirectoryFile(local.relative_to(self.root).as_posix(), stat.st_size,
                                0o755 if stat.st_mode & 0o111 else 0o644, local)

    def __enter__(self) -> DirectorySource:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LayerProgress:
    """Calls `report` every ~10% or `step_bytes`, whichever comes first."""

    def __init__(self, report: Callable[..., None], total: int, step_bytes: int,
                 upload: BlobUpload | None) -> None:
        self.report = report
        self.total = total
        self.step = max(1024 * 1024, min(step_bytes, total // 10 or 1))
        self.next = self.step
        self.upload = upload

    def __call__(self, done: int) -> None:
        if done >= self.next and self.total:
            self.next = done + self.step
            percent = min(100, done * 100 // self.total)
            uploaded = self.upload.registry.stats["uploaded_bytes"] if self.upload else 0
            self.report(f"model layer {percent}% ({done >> 20} MiB of {self.total >> 20} MiB)",
                        bytes_processed=done, bytes_total=self.total, bytes_uploaded=uploaded)

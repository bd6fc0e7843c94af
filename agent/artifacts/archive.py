"""Safe unpacking of model archives (.tar, .tar.gz/.tgz, .zip).

Policy (see docs/artifacts.md):
- member names must be relative and stay inside the destination: absolute
  paths, drive letters, ``..`` components and NUL bytes are refused;
- symbolic and hard links are never created on disk. A link whose target is a
  regular file *inside* the archive is materialised as a copy of that file; a
  link that escapes (absolute, ``..`` out of the root), dangles, or points at a
  directory is refused;
- device files, FIFOs and sockets are refused;
- the number of members is capped by ``max_archive_files`` and the bytes
  actually written (decompressed, counted while copying, never trusting header
  claims) by ``max_archive_bytes``;
- on any refusal the partial output is removed and ``UnsafeArchiveError``
  names the archive and the member.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile
from agent.errors import ArtifactError, UnsafeArchiveError

CHUNK = 1024 * 1024


@dataclass
class Member:
    """A regular file of an archive (links already resolved to their target's data)."""

    name: str  # normalised relative POSIX path
    size: int  # as declared by the header
    mode: int  # 0o644 / 0o755
    key: Any  # TarInfo / ZipInfo whose data to read
    link: bool = False


def archive_kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    raise ArtifactError(f"{name}: not a supported archive (.tar, .tar.gz, .tgz, .zip)")


def _clean_name(raw: str, label: str) -> str:
    """The normalised relative path of a member, or UnsafeArchiveError."""
    name = raw.replace("\\", "/")
    if "\0" in name:
        raise UnsafeArchiveError(f"{label}: member {raw!r} has a NUL byte in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise UnsafeArchiveError(f"{label}: member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{label}: member {raw!r} escapes the destination (..)")
    return "/".join(parts)


def _mode(perm: int) -> int:
    return 0o755 if perm & 0o111 else 0o644


def _resolve_links(
    files: dict[str, Member], links: dict[str, tuple[str, str, bool]], label: str
) -> None:
    """Turn links into copies of regular-file members; refuse anything else."""
    for name, (raw_target, raw_name, symbolic) in links.items():
        seen: set[str] = set()
        current, target, is_sym = name, raw_target, symbolic
        while True:
            if target.startswith("/") or "\0" in target:
                raise UnsafeArchiveError(
                    f"{label}: link {raw_name!r} points outside the destination ({target!r})"
                )
            joined = posixpath.join(posixpath.dirname(current), target) if is_sym else target
            resolved = posixpath.normpath(joined.replace("\\", "/"))
            if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
                raise UnsafeArchiveError(
                    f"{label}: link {raw_name!r} points outside the destination ({target!r})"
                )
            resolved = _clean_name(resolved, label)
            if resolved in files and not files[resolved].link:
                src = files[resolved]
                files[name] = Member(name, src.size, src.mode, src.key, link=True)
                break
            if resolved in links and resolved not in seen:
                seen.add(resolved)
                target, _, is_sym = links[resolved]
                current = resolved
                continue
            raise UnsafeArchiveError(
                f"{label}: link {raw_name!r} does not point at a regular file inside the archive"
            )


def scan(
    path: Path, name: str, settings: ArtifactSettings, label: str,
    select: Callable[[str], str | None] | None = None,
) -> list[Member]:
    """Validate an archive's table of contents; return its files (links materialised).

    `select` maps a member name to the name it gets in the model, or None to ignore
    the member entirely (used for OCI image layers: only `models/` matters).
    """
    kind = archive_kind(name)
    files: dict[str, Member] = {}
    links: dict[str, tuple[str, str, bool]] = {}
    count = 0
    declared = 0
    try:
        entries: Iterator[tuple[str, str, int, int, Any, str]]
        entries = _tar_entries(path) if kind == "tar" else _zip_entries(path)
        for raw, typ, size, perm, key, target in entries:
            count += 1
            if count > settings.max_archive_files:
                raise UnsafeArchiveError(
                    f"{label}: more than {settings.max_archive_files} members "
                    f"(limit max_archive_files reached at {raw!r})"
                )
            try:
                clean = _clean_name(raw, label)
            except UnsafeArchiveError:
                if select is None:
                    raise
                continue
            if select is not None:
                mapped = select(clean)
                if mapped is None:
                    count -= 1
                    continue
                clean = mapped
            if typ == "dir":
                continue
            if typ == "other":
                raise UnsafeArchiveError(
                    f"{label}: member {raw!r} is a device, FIFO or socket (refused)"
                )
            if not clean:
                raise UnsafeArchiveError(f"{label}: member {raw!r} has an empty name")
            if typ in ("symlink", "hardlink"):
                if typ == "hardlink" and select is not None:
                    with contextlib.suppress(UnsafeArchiveError):
                        target = select(_clean_name(target, label)) or target
                links[clean] = (target, raw, typ == "symlink")
                files.pop(clean, None)
                continue
            declared += size
            if declared > settings.max_archive_bytes:
                raise UnsafeArchiveError(
                    f"{label}: more than {settings.max_archive_bytes} bytes "
                    f"(limit max_archive_bytes reached at {raw!r})"
                )
            links.pop(clean, None)
            files[clean] = Member(clean, size, _mode(perm), key)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ArtifactError(f"{label}: not a readable {kind} archive: {exc}") from exc
    _resolve_links(files, links, label)
    names = set(files)
    for member_name in names:
        parent = posixpath.dirname(member_name)
        while parent:
            if parent in names:
                raise UnsafeArchiveError(
                    f"{label}: member {member_name!r} conflicts with the file {parent!r}"
                )
            parent = posixpath.dirname(parent)
    return sorted(files.values(), key=lambda m: m.name.encode("utf-8"))


def _tar_entries(path: Path) -> Iterator[tuple[str, str, int, int, Any, str]]:
    with tarfile.open(path, mode="r:*") as tar:
        for info in tar:
            if info.isdir():
                typ = "dir"
            elif info.isreg():
                typ = "file"
            elif info.issym():
                typ = "symlink"
            elif info.islnk():
                typ = "hardlink"
            else:
                typ = "other"
            yield info.name, typ, info.size, info.mode, info.name, info.linkname


def _zip_entries(path: Path) -> Iterator[tuple[str, str, int, int, Any, str]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            unix = info.external_attr >> 16
            fmt = stat.S_IFMT(unix)
            if info.is_dir() or fmt == stat.S_IFDIR:
                typ = "dir"
            elif fmt == stat.S_IFLNK:
                typ = "symlink"
            elif fmt in (0, stat.S_IFREG):
                typ = "file"
            else:
                typ = "other"
            target = ""
            if typ == "symlink":
                if info.file_size > 4096:
                    raise UnsafeArchiveError(f"{info.filename!r}: symlink target too long")
                target = zf.read(info).decode("utf-8", "replace")
            yield info.filename, typ, info.file_size, unix & 0o777, info.filename, target


class _Counted(io.RawIOBase):
    """Caps the bytes read from a member at its declared size (and the archive total)."""

    def __init__(self, inner: BinaryIO, owner: Any, limit: int, label: str, name: str) -> None:
        super().__init__()
        self._inner, self._owner, self._limit = inner, owner, limit
        self._label, self._name, self._read = label, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        self._read += len(data)
        if self._read > self._limit:
            raise UnsafeArchiveError(
                f"{self._label}: member {self._name!r} decompresses to more than "
                f"{self._limit} bytes"
            )
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()
        with contextlib.suppress(Exception):
            self._owner.close()
        super().close()


def open_member(path: Path, name: str, member: Member, limit: int, label: str) -> BinaryIO:
    """A reader of one member's bytes (opens the archive; closed with the reader)."""
    owner: Any
    if archive_kind(name) == "tar":
        owner = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed with the reader
        extracted = owner.extractfile(member.key)
        if extracted is None:
            owner.close()
            raise ArtifactError(f"{label}: cannot read member {member.name!r}")
        inner: BinaryIO = extracted
    else:
        owner = zipfile.ZipFile(path)
        inner = owner.open(member.key)
    raw = _Counted(inner, owner, limit, label, member.name)
    return io.BufferedReader(raw, buffer_size=CHUNK)


def _clear(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def extract(path: Path, name: str, dest: Path, settings: ArtifactSettings, label: str) -> None:
    """Unpack the archive into the (empty) directory dest, or leave dest empty and raise."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        members = scan(path, name, settings, label)
        total = 0
        for member in members:
            target = dest.joinpath(*member.name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(
                target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, member.mode
            )
            with (
                os.fdopen(fd, "wb") as out,
                open_member(path, name, member, member.size, label) as src,
            ):
                while chunk := src.read(CHUNK):
                    total += len(chunk)
                    if total > settings.max_archive_bytes:
                        raise UnsafeArchiveError(
                            f"{label}: more than {settings.max_archive_bytes} bytes "
                            f"decompressed (limit max_archive_bytes reached at {member.name!r})"
                        )
                    out.write(chunk)
            os.chmod(target, member.mode)
    except BaseException as exc:
        _clear(dest)
        if isinstance(exc, (zipfile.BadZipFile, tarfile.TarError, EOFError)):
            raise ArtifactError(f"{label}: corrupt archive: {exc}") from exc
        raise


class ArchiveSource(BaseSource):
    """A single archive object seen as the files it contains (digest = the archive's)."""

    def __init__(self, inner: BaseSource) -> None:
        super().__init__(inner.uri, inner.settings)
        self.inner = inner
        self._stack.push(inner)  # closes inner with us
        self._archive: Path | None = None
        self.archive_file = inner.entries()[0]

    @property
    def digest(self) -> str:
        return self.inner.digest

    def download(self, scratch: Path | None = None) -> Path:
        """The archive as a local file (downloaded once), in scratch or a private temp dir."""
        if self._archive is None:
            where = scratch if scratch is not None else self.tempdir()
            target = where / ("archive-" + posixpath.basename(self.archive_file.path))
            with self.archive_file.open() as src, target.open("wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            self._archive = target
        return self._archive

    def _list(self) -> list[ModelFile]:
        path, name = self.download(), self.archive_file.path
        members = scan(path, name, self.settings, self.uri)
        return [
            ModelFile(
                m.name, m.size, m.mode, content_id="archive-member",
                opener=lambda m=m: open_member(path, name, m, m.size, self.uri),  # type: ignore[misc]
            )
            for m in members
        ]

    def extract_to(self, dest: Path, scratch: Path | None = None) -> None:
        """Unpack into dest; the archive is downloaded into scratch (same filesystem)."""
        extract(self.download(scratch), self.archive_file.path, dest, self.settings, self.uri)

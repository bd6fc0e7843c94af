"""Safe unpacking of model archives (.tar, .tar.gz/.tgz, .zip).

Policy (see docs/artifacts.md):
- member names must be relative and stay inside the destination: absolute
  paths, drive letters, ``..`` components and NUL bytes are refused;
- symbolic and hard links are never created on disk. A link whose target is a
  regular file *inside* the archive is materialised as a copy of that file; a
  link that escapes (absolute, ``..`` out of the root), dangles, or points at a
  directory is refused;
- device files, FIFOs and sockets are refused;
- the number of members is capped by ``max_archive_files``; the bytes an
  archive unpacks to (link copies included) by ``max_archive_bytes`` and, once
  past 64 MiB, by ``max_archive_ratio`` times the archive's own size (zip and
  gzip bombs). Both are checked on the declared sizes before anything is
  written, and again on the bytes actually written;
- the data is read in one sequential pass after one pass over the table of
  contents (a .tar.gz is decompressed twice, whatever the number of members;
  it used to be reopened per member); links are copied from the written files;
- on any refusal the partial output is removed and ``UnsafeArchiveError``
  names the archive and the member.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile
from agent.errors import ArtifactError, UnsafeArchiveError

CHUNK = 1024 * 1024
#: below this many unpacked bytes the compression ratio is not judged (small, very
#: compressible files such as JSON configs are normal)
RATIO_GRACE = 64 * 1024 * 1024


class Budget:
    """Counts unpacked bytes against max_archive_bytes and the compression-ratio bound."""

    def __init__(self, settings: ArtifactSettings, compressed: int, label: str) -> None:
        self.total_limit = settings.max_archive_bytes
        self.ratio = settings.max_archive_ratio
        self.compressed = compressed
        self.ratio_limit = max(int(self.ratio * max(compressed, 1)), RATIO_GRACE)
        self.label = label
        self.used = 0

    def add(self, n: int, member: str) -> None:
        self.used += n
        if self.used > self.total_limit:
            raise UnsafeArchiveError(
                f"{self.label}: unpacks to more than {self.total_limit} bytes (limit "
                f"artifacts.max_archive_bytes reached at member {member!r})"
            )
        if self.used > self.ratio_limit:
            raise UnsafeArchiveError(
                f"{self.label}: unpacks to more than {self.ratio:g} times its compressed size "
                f"of {self.compressed} bytes (reached at member {member!r}): refused as a "
                "decompression bomb; raise artifacts.max_archive_ratio if the model really "
                "compresses that well"
            )


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
    declared = Budget(settings, path.stat().st_size, label)
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
            declared.add(size, raw)
            links.pop(clean, None)
            files[clean] = Member(clean, size, _mode(perm), key)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ArtifactError(f"{label}: not a readable {kind} archive: {exc}") from exc
    _resolve_links(files, links, label)
    copies = Budget(settings, path.stat().st_size, label)  # link copies take disk space too
    for member in files.values():
        copies.add(member.size, member.name)
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
    """Members in archive order; the key is the member's position (unpack reads in order)."""
    with tarfile.open(path, mode="r:*") as tar:
        for index, info in enumerate(tar):
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
            yield info.name, typ, info.size, info.mode, index, info.linkname


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


def _clear(dest: Path) -> None:
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def _create(dest: Path, member: Member) -> BinaryIO:
    target = dest.joinpath(*member.name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, member.mode)
    return os.fdopen(fd, "wb")


def _copy(src: IO[bytes], dest: Path, member: Member, budget: Budget) -> None:
    """Write one member, refusing more bytes than its header declared."""
    written = 0
    with _create(dest, member) as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > member.size:
                raise UnsafeArchiveError(
                    f"{budget.label}: member {member.name!r} decompresses to more than the "
                    f"{member.size} bytes its header declares"
                )
            budget.add(len(chunk), member.name)
            out.write(chunk)
    os.chmod(dest.joinpath(*member.name.split("/")), member.mode)


def unpack(path: Path, name: str, members: list[Member], dest: Path,
           settings: ArtifactSettings, label: str) -> None:
    """Write the scanned `members` under dest in one sequential pass over the archive."""
    budget = Budget(settings, path.stat().st_size, label)
    wanted: dict[Any, list[Member]] = {}
    for member in members:
        if not member.link:
            wanted.setdefault(member.key, []).append(member)
    first: dict[Any, Path] = {}
    if archive_kind(name) == "tar":
        with tarfile.open(path, mode="r:*") as tar:
            for index, info in enumerate(tar):
                for member in wanted.get(index, ()):
                    stream = tar.extractfile(info)
                    if stream is None:
                        raise ArtifactError(f"{label}: cannot read member {member.name!r}")
                    with stream:
                        _copy(stream, dest, member, budget)
                    first.setdefault(index, dest.joinpath(*member.name.split("/")))
    else:
        with zipfile.ZipFile(path) as zf:
            for key, group in wanted.items():
                for member in group:
                    with zf.open(key) as stream:
                        _copy(stream, dest, member, budget)
                    first.setdefault(key, dest.joinpath(*member.name.split("/")))
    for member in members:  # links become copies of the files written above
        if member.link:
            with first[member.key].open("rb") as stream:
                _copy(stream, dest, member, budget)


def extract(path: Path, name: str, dest: Path, settings: ArtifactSettings,
            label: str) -> list[Member]:
    """Unpack the archive into the (empty) directory dest, or leave dest empty and raise."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        members = scan(path, name, settings, label)
        unpack(path, name, members, dest, settings, label)
        return members
    except BaseException as exc:
        _clear(dest)
        if isinstance(exc, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)):
            raise ArtifactError(f"{label}: corrupt archive: {exc}") from exc
        raise


def disk_files(dest: Path, members: list[Member], content_id: str) -> list[ModelFile]:
    """ModelFiles reading unpacked members from disk."""
    def opener(path: Path) -> Callable[[], BinaryIO]:
        return lambda: path.open("rb")

    return [
        ModelFile(m.name, m.size, m.mode, content_id=content_id,
                  opener=opener(dest.joinpath(*m.name.split("/"))))
        for m in members
    ]


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
        """The members, unpacked once into the private temp dir (read in one pass)."""
        path, name = self.download(), self.archive_file.path
        dest = self.tempdir() / "unpacked"
        members = extract(path, name, dest, self.settings, self.safe_uri)
        path.unlink()
        self._archive = None
        return disk_files(dest, members, "archive-member")

    def extract_to(self, dest: Path, scratch: Path | None = None) -> None:
        """Unpack into dest; the archive is downloaded into scratch (same filesystem)."""
        extract(self.download(scratch), self.archive_file.path, dest, self.settings,
                self.safe_uri)

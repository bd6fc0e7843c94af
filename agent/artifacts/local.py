"""file:///absolute/path and pvc://claim/path (a PVC mounted under settings.pvc_root).

A model URI comes from whoever gives the agent orders, and the agent's disk
holds its own secrets (the service-account token, mounted credentials). So a
file:// path must lie, after resolving symbolic links, under one of
`artifacts.file_roots` (empty by default: file:// refused), as a pvc:// path
must stay inside its claim's mount.

The content id of a local file is the sha256 of its bytes: the digest costs one
extra read of the model, and is exact.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from agent.artifacts.digest import file_sha256
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile
from agent.errors import ArtifactError
from agent.logs import redact_uri


def _allowed_file(uri: str, path: Path, settings: ArtifactSettings) -> Path:
    """The resolved path when it lies under an allowed root, else a clear refusal."""
    if not settings.file_roots:
        raise ArtifactError(
            f"{redact_uri(uri)}: file:// model URIs are disabled (they would read the agent's "
            "own files); list the directory that holds models in artifacts.file_roots, or use "
            "pvc:// or an object store"
        )
    resolved = path.resolve()
    for root in settings.file_roots:
        base = root.resolve()
        if resolved == base or base in resolved.parents:
            return resolved
    roots = ", ".join(str(r) for r in settings.file_roots)
    raise ArtifactError(
        f"{redact_uri(uri)}: {path} is outside artifacts.file_roots ({roots}); file:// "
        "may only read below those directories"
    )


def resolve_path(uri: str, settings: ArtifactSettings) -> Path:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ArtifactError(f"{redact_uri(uri)}: file URIs must be absolute (file:///path)")
        path = Path(unquote(parts.path))
        if not path.is_absolute():
            raise ArtifactError(f"{redact_uri(uri)}: file URIs must be absolute (file:///path)")
        return _allowed_file(uri, path, settings)
    claim = parts.netloc
    if not claim or "/" in claim or claim in (".", ".."):
        raise ArtifactError(f"{redact_uri(uri)}: expected pvc://<claim>/<path>")
    root = (settings.pvc_root / claim).resolve()
    path = (root / unquote(parts.path).lstrip("/")).resolve()
    if path != root and root not in path.parents:
        raise ArtifactError(f"{redact_uri(uri)}: path escapes the claim's mount {root}")
    return path


class LocalSource(BaseSource):
    def __init__(self, uri: str, settings: ArtifactSettings) -> None:
        super().__init__(uri, settings)
        self.path = resolve_path(uri, settings)
        if not self.path.exists():
            hint = " (is the PVC mounted at settings.pvc_root?)" if uri.startswith("pvc:") else ""
            raise ArtifactError(f"{self.safe_uri}: no such file or directory {self.path}{hint}")
        self.single = self.path.is_file()

    def _file(self, path: Path, rel: str) -> ModelFile:
        st = path.stat()
        return ModelFile(
            rel, st.st_size, 0o755 if st.st_mode & 0o111 else 0o644,
            content_id=file_sha256(path),
            opener=lambda: _open_regular(path),
        )

    def _list(self) -> list[ModelFile]:
        if self.single:
            return [self._file(self.path, self.path.name)]
        result: list[ModelFile] = []
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
            for name in filenames:
                full = Path(dirpath) / name
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    # a link inside the tree becomes a copy of its target; escaping ones are skipped
                    target = full.resolve()
                    if root.resolve() not in target.parents or not target.is_file():
                        continue
                elif not stat.S_ISREG(st.st_mode):
                    continue
                result.append(self._file(full, full.relative_to(root).as_posix()))
        return result


def _open_regular(path: Path) -> BinaryIO:
    """Open without following a link swapped in after listing (the listing checked targets)."""
    if path.is_symlink():
        return path.open("rb")  # a link inside the tree, its target checked when listed
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    return os.fdopen(fd, "rb")

"""file:///absolute/path and pvc://claim/path (a PVC mounted under settings.pvc_root).

The content id of a local file is the sha256 of its bytes: the digest costs one
extra read of the model, and is exact.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agent.artifacts.digest import file_sha256
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile
from agent.errors import ArtifactError


def resolve_path(uri: str, settings: ArtifactSettings) -> Path:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ArtifactError(f"{uri}: file URIs must be absolute (file:///path)")
        return Path(unquote(parts.path))
    claim = parts.netloc
    if not claim or "/" in claim or claim in (".", ".."):
        raise ArtifactError(f"{uri}: expected pvc://<claim>/<path>")
    root = (settings.pvc_root / claim).resolve()
    path = (root / unquote(parts.path).lstrip("/")).resolve()
    if path != root and root not in path.parents:
        raise ArtifactError(f"{uri}: path escapes the claim's mount {root}")
    return path


class LocalSource(BaseSource):
    def __init__(self, uri: str, settings: ArtifactSettings) -> None:
        super().__init__(uri, settings)
        self.path = resolve_path(uri, settings)
        if not self.path.is_absolute():
            raise ArtifactError(f"{uri}: file URIs must be absolute (file:///path)")
        if not self.path.exists():
            hint = " (is the PVC mounted at settings.pvc_root?)" if uri.startswith("pvc:") else ""
            raise ArtifactError(f"{uri}: no such file or directory {self.path}{hint}")
        self.single = self.path.is_file()

    def _file(self, path: Path, rel: str) -> ModelFile:
        st = path.stat()
        return ModelFile(
            rel, st.st_size, 0o755 if st.st_mode & 0o111 else 0o644,
            content_id=file_sha256(path),
            opener=lambda: path.open("rb"),
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



"""Building blocks shared by the scheme modules: ModelFile, the source base
class, transient-error retries and a resumable read stream."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

from tenacity import Retrying

from agent.artifacts.digest import listing_digest
from agent.artifacts.settings import ArtifactSettings
from agent.errors import ArtifactError
from agent.logs import redact_uri
from agent.retry import retrying as policy
from agent.retry import wait_for

log = logging.getLogger(__name__)

T = TypeVar("T")

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


class TransientArtifactError(ArtifactError):
    """A fetch failed in a way that retrying may fix (connection reset, 5xx, 429)."""

    transient = True


@dataclass(frozen=True)
class ModelFile:
    """One regular file of the model."""

    path: str  # relative POSIX path inside the model ("model.pkl", "sub/x.bin")
    size: int
    mode: int = 0o644
    #: what the store says identifies the bytes (etag, md5, sha256...), part of the digest
    content_id: str = field(default="", compare=False)
    #: (hashlib algorithm, expected hex) checked by fetch_model while writing, when known
    checksum: tuple[str, str] | None = field(default=None, compare=False, repr=False)
    opener: Callable[[], BinaryIO] | None = field(default=None, compare=False, repr=False)

    def open(self) -> BinaryIO:
        """A streaming reader of the file's bytes (never the whole file in memory)."""
        if self.opener is None:
            raise ArtifactError(f"{self.path}: no reader attached to this model file")
        return self.opener()


class ModelSource(Protocol):
    """An opened model: a digest and a sorted stream of files. A context manager."""

    uri: str

    @property
    def digest(self) -> str: ...

    def files(self) -> Iterator[ModelFile]: ...

    def __enter__(self) -> ModelSource: ...

    def __exit__(self, *exc: object) -> None: ...


class BaseSource:
    """A model source: subclasses implement `_list()` (and may override `single`)."""

    def __init__(self, uri: str, settings: ArtifactSettings) -> None:
        self.uri = uri
        #: the URI as messages, events and logs show it (no user info, no query values)
        self.safe_uri = redact_uri(uri)
        self.settings = settings
        self._stack = contextlib.ExitStack()
        self._entries: list[ModelFile] | None = None
        self._tmp: Path | None = None
        #: True when the URI named one object (not a directory/prefix): archives apply
        self.single = False

    # -- the interface -------------------------------------------------------------
    @property
    def digest(self) -> str:
        return listing_digest((f.path, f.size, f.content_id) for f in self.entries())

    def files(self) -> Iterator[ModelFile]:
        yield from self.entries()

    def __enter__(self) -> BaseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- for subclasses --------------------------------------------------------------
    def entries(self) -> list[ModelFile]:
        if self._entries is None:
            listed = self._list()
            if not listed:
                raise ArtifactError(f"{self.safe_uri}: no files found (check the path or prefix)")
            by_path: dict[str, ModelFile] = {}
            for f in listed:
                by_path[check_relpath(f.path, self.safe_uri)] = f
            self._entries = sorted(by_path.values(), key=lambda f: f.path.encode("utf-8"))
        return self._entries

    def _list(self) -> list[ModelFile]:
        raise NotImplementedError

    def tempdir(self) -> Path:
        """A private temporary directory removed when the source is closed."""
        if self._tmp is None:
            base = self.settings.cache_dir
            if base is not None:
                base.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix="model-", dir=base))
        return self._tmp

    def retrying(self) -> Retrying:
        return retrying(self.settings)

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn, retrying transient artifact errors with jittered exponential backoff."""
        return call_with_retries(self.settings, fn)


def check_relpath(path: str, uri: str) -> str:
    """A store's object name as a safe relative path (no absolute, no '..', no NUL)."""
    parts = path.split("/")
    if (
        not path or path.startswith("/") or "\0" in path or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ArtifactError(
            f"{uri}: refusing the object name {path!r} (empty, absolute or '..' component)"
        )
    return path


def is_archive_name(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def retrying(settings: ArtifactSettings, what: str = "model fetch") -> Retrying:
    """`agent.retry`'s policy with `artifacts.retries` retries of transient fetch errors."""
    return policy(what, settings.retries + 1, logger=log)


def call_with_retries(settings: ArtifactSettings, fn: Callable[[], T]) -> T:
    return retrying(settings)(fn)


class ResumableStream(io.RawIOBase):
    """Reads an object, re-opening it at the current offset when the transfer breaks.

    `open_at(offset)` returns a file-like object positioned at `offset` (a ranged
    request). Without range support (`ranges=False`), a broken transfer is
    restarted from byte 0 and the bytes already delivered are skipped (logged).
    `classify(exc)` maps a library exception to an ArtifactError (transient or not).
    A transfer that ends before `size` bytes counts as broken.
    """

    def __init__(
        self,
        what: str,
        open_at: Callable[[int], Any],
        size: int | None,
        settings: ArtifactSettings,
        classify: Callable[[BaseException], ArtifactError],
        ranges: bool = True,
    ) -> None:
        super().__init__()
        self.what = what
        self._open_at = open_at
        self._size = size
        self._settings = settings
        self._classify = classify
        self._ranges = ranges
        self._offset = 0
        self._body: Any = None
        self._failures = 0

    def readable(self) -> bool:
        return True

    def _reopen(self) -> None:
        self._close_body()
        if self._offset and not self._ranges:
            log.warning(
                "%s: server does not support ranges; restarting the download from byte 0 "
                "(skipping %d bytes already received)", self.what, self._offset,
            )
            body = self._open_at(0)
            remaining = self._offset
            while remaining:
                chunk = body.read(min(remaining, 1024 * 1024))
                if not chunk:
                    raise TransientArtifactError(f"{self.what}: transfer ended early")
                remaining -= len(chunk)
            self._body = body
        else:
            if self._offset:
                log.info("%s: resuming at byte %d", self.what, self._offset)
            self._body = self._open_at(self._offset)

    def _close_body(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()
            self._body = None

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        if self._size is not None:
            want = min(want, self._size - self._offset)
        if want <= 0:
            return 0
        while True:
            try:
                if self._body is None:
                    self._reopen()
                data = self._body.read(want)
                if not data and (self._size is None or self._offset >= self._size):
                    return 0
                if not data:
                    raise TransientArtifactError(
                        f"{self.what}: transfer ended at byte {self._offset} of {self._size}"
                    )
            except Exception as exc:
                err = exc if isinstance(exc, ArtifactError) else self._classify(exc)
                self._close_body()
                self._failures += 1
                if not err.transient or self._failures > self._settings.retries:
                    raise err from exc
                delay = wait_for(err, self._failures)
                log.debug("%s: %s; retry %d of %d in %.1fs", self.what, err, self._failures,
                          self._settings.retries, delay)
                time.sleep(delay)
                continue
            n = len(data)
            buffer[:n] = data
            self._offset += n
            self._failures = 0  # progress: a flaky link may break again later, that is fine
            return n

    def close(self) -> None:
        self._close_body()
        super().close()


def buffered(raw: io.RawIOBase) -> BinaryIO:
    return io.BufferedReader(raw, buffer_size=1024 * 1024)

"""A chunked blob upload to an OCI registry, overlapping the network with the producer.

Opened by `Registry.start_upload`; the direct builder streams the model layer
into it while tar and compression run in the agent's thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import requests

from agent.errors import RegistryError

if TYPE_CHECKING:
    from agent.images.registry import Registry


STREAM_BATCH = 1024 * 1024  # bytes handed to the streaming thread at a time


class BlobUpload:
    """An upload session: PATCH the bytes, then PUT ?digest= with what is left.

    `upload_mode: stream` (default) sends everything in ONE streamed PATCH
    (chunked transfer encoding), as docker push does: three requests per blob,
    whatever its size. `chunked` sends a PATCH with Content-Range per chunk,
    each at least `chunk_size` bytes (and the registry's `OCI-Chunk-Min-Length`),
    for registries or proxies that limit request bodies.

    Bytes are sent by a background thread so that producing the next piece
    (tar, compression) overlaps the network; that thread also hashes what it
    sends, so the blob digest costs the producer nothing (`digest()`). At most
    about three chunks (stream: three 1 MiB batches) are in memory.
    """

    def __init__(self, registry: Registry, repository: str, response: requests.Response) -> None:
        self.registry = registry
        self.repository = repository
        self.location = self._location(response)
        min_length = response.headers.get("OCI-Chunk-Min-Length", "")
        self.chunk_size = max(registry.settings.chunk_size_bytes,
                              int(min_length) if min_length.isdigit() else 0)
        self.streaming = registry.settings.upload_mode == "stream"
        self._batch = STREAM_BATCH if self.streaming else self.chunk_size
        self._stream_ended = False
        self.offset = 0
        self._pieces: list[bytes] = []
        self._pending = 0
        self._hasher = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        registry.stats["blob_uploads"] += 1

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(
                f"registry {self.registry.host} opened an upload without a Location"
            )
        return self.registry._url(location)

    def _scopes(self) -> list[str]:
        return [self.registry.push_scope(self.repository)]

    def _patch(self, chunk: bytes) -> None:
        self._hasher.update(chunk)
        end = self.offset + len(chunk) - 1
        response = self.registry.request(
            "PATCH", self.location, self._scopes(), ok=(202,),
            what=f"upload chunk to {self.repository}",
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{self.offset}-{end}",
                     "Content-Length": str(len(chunk))},
            data=chunk,
        )
        self.location = self._location(response)
        self.offset += len(chunk)
        self.registry.stats["uploaded_bytes"] += len(chunk)

    def _worker(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._failure is None:
                try:
                    self._patch(chunk)
                except BaseException as exc:  # handed to the producer
                    self._failure = exc

    def _stream_body(self) -> Iterator[bytes]:
        while (piece := self._queue.get()) is not None:
            self._hasher.update(piece)
            self.offset += len(piece)
            self.registry.stats["uploaded_bytes"] += len(piece)
            yield piece
        self._stream_ended = True

    def _stream_worker(self) -> None:
        """One PATCH whose body is everything written until `_drain` (not retried: a
        stream cannot be replayed; a failure fails the build, which a retry redoes)."""
        self._stream_ended = False
        try:
            response = self.registry.request(
                "PATCH", self.location, self._scopes(), ok=(202,), retry=False,
                what=f"upload to {self.repository}",
                headers={"Content-Type": "application/octet-stream"}, data=self._stream_body(),
            )
            self.location = self._location(response)
        except BaseException as exc:  # handed to the producer
            self._failure = exc
            while not self._stream_ended and self._queue.get() is not None:
                pass  # unblock the producer until it stops writing

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._pieces.append(bytes(data))
        self._pending += len(data)
        if self._pending < self._batch:
            return
        chunk = b"".join(self._pieces)  # the one copy; chunks may exceed chunk_size a little
        self._pieces.clear()
        self._pending = 0
        self._raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._stream_worker if self.streaming else self._worker,
                name=f"upload-{self.repository}", daemon=True,
            )
            self._thread.start()
        self._queue.put(chunk)

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._raise_failure()

    def digest(self) -> str:
        """sha256 of everything written so far (waits for the chunks in flight)."""
        self._drain()
        hasher = self._hasher.copy()
        for piece in self._pieces:
            hasher.update(piece)
        return "sha256:" + hasher.hexdigest()

    def finish(self, digest: str | None = None) -> str:
        """Send what is left with the closing PUT; the registry verifies the digest."""
        self._drain()
        rest = b"".join(self._pieces)
        self._pieces.clear()
        self._pending = 0
        self._hasher.update(rest)
        digest = digest or "sha256:" + self._hasher.hexdigest()
        separator = "&" if "?" in self.location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(rest))}
        if rest:
            headers["Content-Range"] = f"{self.offset}-{self.offset + len(rest) - 1}"
        self.registry.request(
            "PUT", f"{self.location}{separator}{urlencode({'digest': digest})}", self._scopes(),
            ok=(201,), what=f"complete blob upload {digest[:19]} to {self.repository}",
            headers=headers, data=rest,
        )
        self.offset += len(rest)
        self.registry.stats["uploaded_bytes"] += len(rest)
        return digest

    def cancel(self) -> None:
        """Abandon the session (best effort)."""
        with contextlib.suppress(Exception):
            self._drain()
        with contextlib.suppress(RegistryError):
            self.registry.request("DELETE", self.location, self._scopes(), ok=(202, 204, 404),
                                  what="cancel upload", retry=False)


def copy_blob(chunks: Iterator[bytes], source: str, digest: str, upload: BlobUpload) -> None:
    """Stream a blob read from `source` into `upload`, finished only when its digest is
    `digest` (a corrupt or substituted blob is never committed); cancelled on any error."""
    try:
        for chunk in chunks:
            upload.write(chunk)
        if upload.digest() != digest:
            raise RegistryError(f"blob {digest} from {source} is corrupt")
        upload.finish(digest)
    except BaseException:
        upload.cancel()
        raise

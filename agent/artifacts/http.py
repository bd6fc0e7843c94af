"""http(s)://host/path: one object, optional bearer/Authorization header from the secret.

The content id is the strong ETag, else Last-Modified (+ Content-Length),
else a weak ETag; a server that gives none of them (or no length) is
downloaded once into a temporary file while hashing (content id = sha256).
Transfers broken mid-body resume with `Range` (guarded by `If-Range`) when
the server announces `Accept-Ranges: bytes`; otherwise the download restarts
from byte 0 and the log says so.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from agent.artifacts.binding import refuse_unbound
from agent.artifacts.credentials import HttpCredentials
from agent.artifacts.egress import EgressPolicy, guarded_session
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import (
    BaseSource,
    ModelFile,
    ResumableStream,
    TransientArtifactError,
    buffered,
)
from agent.artifacts.tls import verify_setting
from agent.errors import ArtifactError
from agent.logs import redact_uri
from agent.retry import is_transient_status

__all__ = ["HttpSource", "classify", "status_error", "verify_setting"]

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024


def too_large(what: str, limit: int) -> ArtifactError:
    return ArtifactError(
        f"{what}: the download is larger than {limit} bytes (artifacts.max_archive_bytes); "
        "raise the limit if the model really is that large"
    )


def classify(exc: BaseException, uri: str) -> ArtifactError:
    """Map a requests/urllib3 exception to an ArtifactError naming the (redacted) URI."""
    if isinstance(exc, ArtifactError):
        return exc
    uri = redact_uri(uri)
    if isinstance(exc, requests.exceptions.SSLError):
        return ArtifactError(
            f"{uri}: TLS verification failed (set artifacts.ca_bundle / --ca-bundle to the "
            "server's CA)"
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                        requests.exceptions.ChunkedEncodingError, ConnectionError, TimeoutError)):
        return TransientArtifactError(f"{uri}: connection problem: {type(exc).__name__}")
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(exc, Urllib3Error):
            return TransientArtifactError(f"{uri}: connection problem: {type(exc).__name__}")
    except ImportError:  # pragma: no cover
        pass
    return ArtifactError(f"{uri}: unexpected error {type(exc).__name__}")


def status_error(status: int, uri: str, what: str = "server") -> ArtifactError:
    uri = redact_uri(uri)
    if status == 404:
        return ArtifactError(f"{uri}: not found (HTTP 404; check the URL)")
    if status in (401, 403):
        return ArtifactError(
            f"{uri}: the {what} refused access (HTTP {status}; check the token in the "
            "credentials secret)"
        )
    if status == 416:
        return ArtifactError(f"{uri}: the server refused the byte range (HTTP 416)")
    if is_transient_status(status):
        return TransientArtifactError(f"{uri}: {what} error HTTP {status} (transient)")
    return ArtifactError(f"{uri}: unexpected HTTP {status} from the {what}")


class HttpSource(BaseSource):
    def __init__(
        self, uri: str, settings: ArtifactSettings, creds: HttpCredentials | None
    ) -> None:
        super().__init__(uri, settings)
        parts = urlsplit(uri)
        if creds is not None and not creds.binding.allows(parts.scheme, parts.hostname or "",
                                                          parts.port):
            raise refuse_unbound(self.safe_uri, parts.netloc.rsplit("@", 1)[-1], creds.binding,
                                 "token")
        EgressPolicy.of(settings).check_url(uri, self.safe_uri)
        self.session = guarded_session(settings)
        self.session.headers["Accept-Encoding"] = "identity"
        if creds is not None:
            # requests drops the header on a redirect to another host, port or scheme
            self.session.headers["Authorization"] = creds.authorization
        self._stack.callback(self.session.close)
        self.single = True
        name = posixpath.basename(unquote(urlsplit(uri).path)) or "model"
        self.name = name
        self.validator: str | None = None

    def request(self, method: str, headers: dict[str, str] | None = None,
                refused_ok: bool = False) -> requests.Response:
        try:
            resp = self.session.request(
                method, self.uri, headers=headers, stream=True, allow_redirects=True,
                timeout=self.settings.timeout_seconds, verify=verify_setting(self.settings),
            )
        except Exception as exc:
            raise classify(exc, self.safe_uri) from exc
        if resp.status_code >= 400 and not (refused_ok and resp.status_code in (403, 405)):
            resp.close()
            raise status_error(resp.status_code, self.safe_uri)
        return resp

    def _metadata(self) -> Mapping[str, str]:
        """The object's headers: from HEAD, or, where HEAD is refused, from a one-byte ranged
        GET. A presigned S3 URL is signed for GET only, so S3 answers its HEAD with 403."""
        resp = self.call(lambda: self.request("HEAD", refused_ok=True))
        resp.close()
        if resp.status_code < 400:
            return resp.headers
        resp = self.call(lambda: self.request("GET", {"Range": "bytes=0-0"}))
        resp.close()
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(resp.headers)
        total = headers.get("Content-Range", "").rpartition("/")[2]
        if resp.status_code == 206:  # the size is the range's total (unknown: "*")
            headers.pop("Content-Length", None)
            headers.setdefault("Accept-Ranges", "bytes")
            if total.isdigit():
                headers["Content-Length"] = total
        return headers

    def _list(self) -> list[ModelFile]:
        headers = self._metadata()
        length = headers.get("Content-Length")
        etag = headers.get("ETag")
        modified = headers.get("Last-Modified")
        self.ranges = headers.get("Accept-Ranges", "").lower() == "bytes"
        content_id = None
        if etag and not etag.startswith("W/"):
            content_id, self.validator = f"http-etag:{etag}", etag
        elif modified:
            content_id, self.validator = f"http-last-modified:{modified}", modified
        elif etag:
            content_id = f"http-weak-etag:{etag}"
        if length is None or content_id is None or "Content-Encoding" in headers:
            return [self._hashed()]
        size = int(length)
        if size > self.settings.max_archive_bytes:
            raise too_large(self.safe_uri, self.settings.max_archive_bytes)
        return [ModelFile(self.name, size, 0o644, content_id=content_id,
                          opener=lambda: self._open(size))]

    def _hashed(self) -> ModelFile:
        """No usable validator: download once into a temp file while hashing."""
        log.info("%s: no ETag/Last-Modified/length; hashing the content while downloading",
                 self.safe_uri)
        limit = self.settings.max_archive_bytes
        self.ranges = False
        target = self.tempdir() / "download"
        digest = hashlib.sha256()
        size = 0

        def download() -> None:
            nonlocal size
            digest.__init__()  # type: ignore[misc]
            size = 0
            resp = self.request("GET")
            try:
                with target.open("wb") as out:
                    while chunk := resp.raw.read(CHUNK, decode_content=False):
                        digest.update(chunk)
                        size += len(chunk)
                        if size > limit:
                            raise too_large(self.safe_uri, limit)
                        out.write(chunk)
            except Exception as exc:
                raise classify(exc, self.safe_uri) from exc
            finally:
                resp.close()

        self.call(download)
        path = Path(target)
        return ModelFile(self.name, size, 0o644, content_id="sha256:" + digest.hexdigest(),
                         opener=lambda: path.open("rb"))

    def _open(self, size: int) -> Any:
        def open_at(offset: int) -> Any:
            headers = {}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if self.validator:
                    headers["If-Range"] = self.validator
            resp = self.request("GET", headers)
            if offset and resp.status_code != 206:
                # the range was ignored (or If-Range failed): restart and skip what we have
                log.warning("%s: server ignored the byte range; restarting from byte 0",
                            self.safe_uri)
                body = _Body(resp)
                remaining = offset
                while remaining:
                    chunk = body.read(min(remaining, CHUNK))
                    if not chunk:
                        raise TransientArtifactError(f"{self.safe_uri}: transfer ended early")
                    remaining -= len(chunk)
                return body
            return _Body(resp)

        if not self.ranges:
            log.debug("%s: server does not announce Accept-Ranges: bytes", self.safe_uri)
        return buffered(ResumableStream(
            self.safe_uri, open_at, size, self.settings, lambda e: classify(e, self.safe_uri),
            ranges=self.ranges,
        ))


class _Body:
    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp

    def read(self, n: int) -> bytes:
        return bytes(self.resp.raw.read(n, decode_content=False))

    def close(self) -> None:
        self.resp.close()

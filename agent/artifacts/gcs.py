"""gs://bucket/object-or-prefix over the GCS JSON API (requests + google-auth).

Credentials: a service-account key JSON from the secret, else google-auth's
default chain (Workload Identity, GOOGLE_APPLICATION_CREDENTIALS, metadata
server). `STORAGE_EMULATOR_HOST` (or settings.gcs_endpoint_url) points at an
emulator such as fake-gcs-server, reached anonymously. The content id is the
object's md5Hash (checked while downloading), else crc32c + generation.
Downloads pin the generation read at listing time and resume with `Range`.
"""

from __future__ import annotations

import base64
import os
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from agent.artifacts.credentials import GcsCredentials
from agent.artifacts.http import classify as http_classify
from agent.artifacts.http import status_error
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile, ResumableStream, buffered
from agent.artifacts.tls import verify_setting
from agent.errors import ArtifactError
from agent.logs import redact_uri

SCOPES = ["https://www.googleapis.com/auth/devstorage.read_only"]
PUBLIC = "https://storage.googleapis.com"


def endpoint(settings: ArtifactSettings) -> tuple[str, bool]:
    """(base URL, is an emulator)."""
    emulator = settings.gcs_endpoint_url or os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        if "://" not in emulator:
            emulator = "http://" + emulator
        return emulator.rstrip("/"), True
    return PUBLIC, False


def make_session(settings: ArtifactSettings, creds: GcsCredentials | None, uri: str) -> Any:
    _, emulated = endpoint(settings)
    if emulated and creds is None:
        return requests.Session()
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.auth.transport.requests import AuthorizedSession

    try:
        if creds is not None:
            from google.oauth2 import service_account

            credentials: Any = service_account.Credentials.from_service_account_info(
                creds.service_account_info, scopes=SCOPES
            )
        else:
            credentials, _ = google.auth.default(scopes=SCOPES)
    except (DefaultCredentialsError, ValueError, KeyError) as exc:
        raise ArtifactError(
            f"{uri}: no usable GCS credentials (give a service-account key secret, e.g. "
            f"gcs-key.json, or set up Workload Identity): {type(exc).__name__}"
        ) from exc
    session = AuthorizedSession(credentials)
    return session


class GcsSource(BaseSource):
    def __init__(
        self, uri: str, settings: ArtifactSettings, creds: GcsCredentials | None
    ) -> None:
        super().__init__(uri, settings)
        parts = urlsplit(uri)
        if not parts.netloc:
            raise ArtifactError(f"{redact_uri(uri)}: expected gs://<bucket>/<object or prefix>")
        self.bucket, self.name = parts.netloc, parts.path.lstrip("/")
        self.base, _ = endpoint(settings)
        self.session = make_session(settings, creds, self.safe_uri)
        self._stack.callback(self.session.close)

    def _get(self, url: str, params: dict[str, str] | None = None,
             headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
        from google.auth.exceptions import RefreshError, TransportError

        try:
            resp = self.session.request(
                "GET", url, params=params, headers=headers, stream=stream,
                timeout=self.settings.timeout_seconds, verify=verify_setting(self.settings),
            )
        except RefreshError as exc:
            raise ArtifactError(
                f"{self.safe_uri}: the GCS credentials were refused (expired or revoked key? "
                "check the service account)"
            ) from exc
        except TransportError as exc:
            raise http_classify(ConnectionError(str(type(exc).__name__)), self.safe_uri) from exc
        except Exception as exc:
            raise http_classify(exc, self.safe_uri) from exc
        if resp.status_code >= 400:
            resp.close()
            if resp.status_code == 404:
                raise ArtifactError(
                    f"{self.safe_uri}: not found (check the bucket and object name)")
            if resp.status_code in (401, 403):
                raise ArtifactError(
                    f"{self.safe_uri}: access denied by GCS (HTTP {resp.status_code}; the service "
                    "account needs storage.objects.get and storage.objects.list)"
                )
            raise status_error(resp.status_code, self.safe_uri, "GCS")
        return resp

    def _object_url(self, name: str) -> str:
        return f"{self.base}/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(name, safe='')}"

    def _file(self, meta: dict[str, Any], rel: str) -> ModelFile:
        size = int(meta.get("size", 0))
        generation = str(meta.get("generation", ""))
        checksum = None
        if meta.get("md5Hash"):
            content_id = f"gcs-md5:{meta['md5Hash']}"
            checksum = ("md5", base64.b64decode(meta["md5Hash"]).hex())
        elif meta.get("crc32c"):
            content_id = f"gcs-crc32c:{meta['crc32c']}:{generation}"
        else:
            content_id = f"gcs-generation:{generation}"
        name = meta["name"]
        return ModelFile(rel, size, 0o644, content_id=content_id, checksum=checksum,
                         opener=lambda: self._open(name, size, generation))

    def _open(self, name: str, size: int, generation: str) -> Any:
        def open_at(offset: int) -> Any:
            headers = {"Accept-Encoding": "gzip"}  # stored bytes, no decompressive transcoding
            if offset:
                headers["Range"] = f"bytes={offset}-"
            params = {"alt": "media"}
            if generation:
                params["generation"] = generation
            resp = self._get(self._object_url(name), params, headers, stream=True)
            return _Raw(resp)

        return buffered(ResumableStream(
            f"gs://{self.bucket}/{name}", open_at, size, self.settings,
            lambda e: http_classify(e, self.safe_uri), ranges=True,
        ))

    def _list(self) -> list[ModelFile]:
        if self.name and not self.name.endswith("/"):
            try:
                meta = self.call(lambda: self._get(self._object_url(self.name)).json())
            except ArtifactError as exc:
                if "not found" not in str(exc):
                    raise
            else:
                self.single = True
                return [self._file(meta, self.name.rsplit("/", 1)[-1])]
        prefix = self.name if not self.name or self.name.endswith("/") else self.name + "/"
        result: list[ModelFile] = []
        token: str | None = None
        url = f"{self.base}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        while True:
            params = {"prefix": prefix, "maxResults": str(self.settings.list_page_size)}
            if token:
                params["pageToken"] = token
            page = self.call(lambda p=params: self._get(url, p).json())  # type: ignore[misc]
            for meta in page.get("items", []):
                rel = meta["name"][len(prefix):]
                if rel and not meta["name"].endswith("/"):
                    result.append(self._file(meta, rel))
            token = page.get("nextPageToken")
            if not token:
                break
        if not result:
            raise ArtifactError(f"{self.safe_uri}: not found (no object or prefix with that name)")
        return result


class _Raw:
    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp

    def read(self, n: int) -> bytes:
        return bytes(self.resp.raw.read(n, decode_content=False))

    def close(self) -> None:
        self.resp.close()

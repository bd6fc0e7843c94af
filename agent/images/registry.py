"""OCI distribution API client (the registry boundary); blob uploads are in `upload.py`.

One `Registry` per registry host. It answers the auth challenge of `/v2/`
(Basic, or a Bearer token per scope, fetched with the provider's credentials
and cached until it expires), retries what is transient (connection errors,
429, 5xx; `Retry-After` honoured) and turns every failure into a
`RegistryError` whose message names the registry and what to fix.

TLS: `verify=` is passed on every request (REQUESTS_CA_BUNDLE in the
environment would otherwise override the session); a custom CA bundle is
added to the default trust store, registries in `insecure_registries` are
spoken to over plain HTTP and `skip_tls_verify_registries` skips
verification. Nothing is special about 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlencode, urljoin

import requests
from tenacity import Retrying

from agent.errors import RegistryError
from agent.images.auth import AnonymousProvider, CredentialProvider
from agent.images.bodies import (
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    check_digest,
    read_capped,
    small_body,
)
from agent.images.oci import ACCEPT, Manifest
from agent.images.refusals import refusal
from agent.images.settings import ImageSettings
from agent.images.trust import fetch_token
from agent.images.upload import BlobUpload
from agent.retry import is_transient_status, retry_after_of, retrying
from agent.tls import verify_for

log = logging.getLogger(__name__)

class _Transient(Exception):
    """A response worth retrying (429/5xx); carries the response for Retry-After and the
    start of its body (read, and the connection released, at once)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response
        self.body = small_body(response)
        self.retry_after = retry_after_of(response.headers)


#: a body whose transfer broke off (reset, timeout, truncated chunking): worth a retry
_CUT_SHORT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (_Transient, *_CUT_SHORT)) and not (
        isinstance(exc, requests.exceptions.SSLError)
    )


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class Registry:
    """Client of one registry host (`host[:port]`)."""

    def __init__(self, host: str, settings: ImageSettings,
                 provider: CredentialProvider | None = None,
                 session: requests.Session | None = None) -> None:
        self.host = host
        self.settings = settings
        self.provider = provider or AnonymousProvider()
        self.session = session or requests.Session()
        self.scheme = "http" if host in settings.insecure_registries else "https"
        self.base_url = f"{self.scheme}://{host}"
        self.verify: bool | str = True
        if host in settings.skip_tls_verify_registries:
            self.verify = False
        else:  # the system roots plus images.ca_bundle (tls.ca_bundle unless overridden)
            self.verify = verify_for(settings.ca_bundle, "images.ca_bundle", error=RegistryError)
        self._auth_kind: str | None = None  # "none" | "basic" | "bearer"
        self._challenge: dict[str, str] = {}
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"requests": 0, "uploaded_bytes": 0, "mounts": 0,
                                      "blob_uploads": 0}

    # -- transport -------------------------------------------------------

    def _url(self, path_or_url: str) -> str:
        return urljoin(self.base_url + "/", path_or_url)

    def _send(self, method: str, url: str, headers: dict[str, str], **kwargs: Any
              ) -> requests.Response:
        try:
            self.stats["requests"] += 1
            response = self.session.request(
                method, url, headers=headers, verify=self.verify,
                timeout=kwargs.pop("timeout", self.settings.timeout_seconds), **kwargs
            )
        except requests.exceptions.SSLError as exc:
            text = str(exc)
            if "WRONG_VERSION_NUMBER" in text.upper() or "wrong version" in text:
                raise RegistryError(
                    f"registry {self.host} does not speak TLS: if it serves plain HTTP, list it "
                    "in images.insecure_registries"
                ) from None
            raise RegistryError(
                f"TLS handshake with registry {self.host} failed, certificate not trusted: set "
                "images.ca_bundle to the CA that signed it (or list the registry in "
                "images.skip_tls_verify_registries)"
            ) from None
        if is_transient_status(response.status_code):
            raise _Transient(response)
        return response

    def _retrying(self) -> Retrying:
        return retrying(f"registry {self.host}", self.settings.retries + 1,
                        transient=_is_transient, logger=log)

    def request(self, method: str, path: str, scopes: Iterable[str] = (),
                ok: Iterable[int] = (200,), what: str = "request",
                headers: dict[str, str] | None = None, retry: bool = True,
                **kwargs: Any) -> requests.Response:
        """Send with auth and retries; raise RegistryError unless the status is in `ok`."""
        scopes = tuple(scopes)
        url = self._url(path)
        try:
            for attempt in self._retrying() if retry else [None]:
                if attempt is None:
                    response = self._authorized(method, url, scopes, headers or {}, **kwargs)
                else:
                    with attempt:
                        response = self._authorized(method, url, scopes, headers or {},
                                                    **kwargs)
        except _Transient as exc:
            raise self._error(exc.response, what, exc.body) from None
        except requests.RequestException as exc:
            raise RegistryError(
                f"{what}: cannot reach registry {self.host} ({type(exc).__name__}); check "
                "the address, network policy and proxy settings"
            ) from None
        if response.status_code not in tuple(ok):
            raise self._error(response, what)
        return response

    def _authorized(self, method: str, url: str, scopes: tuple[str, ...],
                    headers: dict[str, str], **kwargs: Any) -> requests.Response:
        response = self._send(method, url, {**headers, **self._auth_header(scopes)}, **kwargs)
        if response.status_code != 401:
            return response
        for fresh in (False, True):
            if fresh:
                self.provider.invalidate(self.host)
                self._tokens.clear()
            self._learn_challenge(response)
            auth = self._auth_header(scopes, challenge=response.headers.get("WWW-Authenticate"))
            if not auth:
                return response
            response.close()  # a challenge answered: its connection goes back to the pool
            response = self._send(method, url, {**headers, **auth}, **kwargs)
            if response.status_code != 401:
                return response
        return response

    # -- auth -------------------------------------------------------------

    def _learn_challenge(self, response: requests.Response) -> None:
        header = response.headers.get("WWW-Authenticate", "")
        kind, _, params = header.partition(" ")
        if kind.lower() == "bearer":
            self._auth_kind = "bearer"
            self._challenge = dict(_CHALLENGE_PARAM.findall(params))
        elif kind.lower() == "basic":
            self._auth_kind = "basic"

    def _auth_header(self, scopes: tuple[str, ...], challenge: str | None = None
                     ) -> dict[str, str]:
        if self._auth_kind == "basic":
            credential = self.provider.get(self.host)
            if credential is None:
                return {}
            pair = f"{credential.username}:{credential.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        if self._auth_kind == "bearer":
            extra = dict(_CHALLENGE_PARAM.findall(challenge or "")).get("scope", "")
            wanted = tuple(sorted({*scopes, *extra.split()} - {""}))
            token = self._token(wanted)
            return {"Authorization": f"Bearer {token}"} if token else {}
        return {}

    def _token(self, scopes: tuple[str, ...]) -> str | None:
        key = " ".join(scopes)
        with self._lock:
            cached = self._tokens.get(key)
            if cached and time.time() < cached[1]:
                return cached[0]
            realm = self._challenge.get("realm")
            if not realm:
                return None
            params: list[tuple[str, str]] = []
            if self._challenge.get("service"):
                params.append(("service", self._challenge["service"]))
            params.extend(("scope", scope) for scope in scopes)
            token, lifetime = fetch_token(self.session, realm, params, self.provider, self.host,
                                          verify=self._verify_for(realm),
                                          timeout=self.settings.timeout_seconds,
                                          insecure=self.settings.insecure_registries)
            self._tokens[key] = (str(token), time.time() + max(lifetime - 10, 5))
            return str(token)

    def _verify_for(self, url: str) -> bool | str:
        return self.verify if url.startswith("https://") else True

    def _error(self, response: requests.Response, what: str,
               body: bytes | None = None) -> RegistryError:
        raw = small_body(response) if body is None else body
        return refusal(self.host, response.status_code, raw, what,
                       login_configured=self.provider.name != "anonymous")

    # -- API --------------------------------------------------------------

    def ping(self) -> None:
        """GET /v2/: reachability, TLS and the auth scheme (learned from the challenge)."""
        response = self.request("GET", "/v2/", ok=(200, 401), what="ping")
        if response.status_code == 401:
            self._learn_challenge(response)
        elif self._auth_kind is None:
            self._auth_kind = "none"

    @staticmethod
    def pull_scope(repository: str) -> str:
        return f"repository:{repository}:pull"

    @staticmethod
    def push_scope(repository: str) -> str:
        return f"repository:{repository}:pull,push"

    def _get_body(self, path: str, scopes: list[str], limit: int, what: str,
                  ok: tuple[int, ...] = (200,), headers: dict[str, str] | None = None,
                  ) -> tuple[requests.Response, bytes | None]:
        """GET `path` and read its body, at most `limit` bytes (None: not a 200). A transfer
        cut short is retried like a failed request, then reported as a RegistryError."""
        try:
            for attempt in self._retrying():
                with attempt:
                    response = self.request("GET", path, scopes, ok=ok, what=what,
                                            headers=headers, stream=True)
                    if response.status_code != 200:
                        response.close()
                        return response, None
                    return response, read_capped(response, limit, what)
        except requests.RequestException as exc:  # cut short (after retries), or undecodable
            raise RegistryError(
                f"{what}: registry {self.host} broke off the transfer ({type(exc).__name__}); "
                "check the registry and the network in between") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest or index at `reference` (tag or digest); None when it doesn't exist."""
        response, raw = self._get_body(
            f"/v2/{repository}/manifests/{reference}", [self.pull_scope(repository)],
            MAX_MANIFEST_BYTES, f"manifest {self.host}/{repository}:{reference}",
            ok=(200, 404), headers={"Accept": ACCEPT})
        if raw is None:
            return None
        digest = sha256_digest(raw)
        if ":" in reference:  # a digest (a tag has no colon): the content must match it
            check_digest(raw, reference, f"manifest {self.host}/{repository}@{reference}")
        media_type = (response.headers.get("Content-Type", "").split(";")[0]
                      or json.loads(raw).get("mediaType", ""))
        return Manifest(raw, media_type, digest)

    def resolve_image(self, repository: str, reference: str,
                      platform: tuple[str, str] = ("linux", "amd64")) -> Manifest:
        """The image manifest for `platform` (from an index when the reference is one)."""
        manifest = self.get_manifest(repository, reference)
        if manifest is None:
            raise RegistryError(
                f"base image {self.host}/{repository}:{reference} not found: check "
                "the server profile's image"
            )
        if not manifest.is_index:
            return manifest
        for entry in manifest.data.get("manifests", []):
            plat = entry.get("platform") or {}
            if (plat.get("os"), plat.get("architecture")) == platform:
                child = self.get_manifest(repository, entry["digest"])
                if child is None:
                    break
                return child
        raise RegistryError(
            f"base image {self.host}/{repository}:{reference} has no {'/'.join(platform)} "
            "manifest"
        )

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest of `reference` when it exists (HEAD), else None: the tag check."""
        response = self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", [self.pull_scope(repository)],
            ok=(200, 404), what=f"check tag {repository}:{reference}",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        found = self.get_manifest(repository, reference)
        return found.digest if found else None

    def put_manifest(self, repository: str, reference: str, raw: bytes,
                     media_type: str) -> str:
        self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", [self.push_scope(repository)],
            ok=(200, 201), what=f"push manifest {repository}:{reference}",
            headers={"Content-Type": media_type}, data=raw,
        )
        return sha256_digest(raw)

    def blob_exists(self, repository: str, digest: str) -> bool:
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", [self.pull_scope(repository)],
            ok=(200, 404), what=f"check blob {digest[:19]} in {repository}",
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (an image config), verified, at most MAX_CONFIG_BYTES."""
        _, data = self._get_body(
            f"/v2/{repository}/blobs/{digest}", [self.pull_scope(repository)],
            MAX_CONFIG_BYTES, f"blob {digest[:19]} from {self.host}/{repository}")
        assert data is not None  # ok=(200,): anything else raised
        if sha256_digest(data) != digest:
            raise RegistryError(f"blob {digest} from {self.host}/{repository} is corrupt")
        return data

    def stream_blob(self, repository: str, digest: str,
                    chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        """The blob's bytes, streamed (the caller verifies the digest)."""
        response = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", [self.pull_scope(repository)],
            what=f"get blob {digest[:19]} from {repository}", stream=True,
        )
        with response:
            yield from response.iter_content(chunk_size)

    def mount_blob(self, repository: str, digest: str, from_repository: str
                   ) -> BlobUpload | None:
        """Cross-repository mount; None when mounted, else the upload session it opened."""
        query = urlencode({"mount": digest, "from": from_repository})
        response = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/?{query}",
            [self.push_scope(repository), self.pull_scope(from_repository)],
            ok=(201, 202), what=f"mount blob {digest[:19]} into {repository}",
        )
        if response.status_code == 201:
            self.stats["mounts"] += 1
            return None
        return BlobUpload(self, repository, response)

    def start_upload(self, repository: str) -> BlobUpload:
        response = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/", [self.push_scope(repository)],
            ok=(202,), what=f"start blob upload to {repository}",
        )
        return BlobUpload(self, repository, response)

    def push_blob(self, repository: str, data: bytes) -> str:
        """Monolithic upload of a small blob (configs); skipped when already present."""
        digest = sha256_digest(data)
        if not self.blob_exists(repository, digest):
            upload = self.start_upload(repository)
            upload.write(data)
            upload.finish(digest)
        return digest

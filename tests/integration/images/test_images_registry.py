"""The registry client against real registries (plain, basic/TLS, bearer token) and moto ECR."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from images_support import Registries

from agent.config import Settings
from agent.errors import RegistryError
from agent.images import build_model_image
from agent.images.auth import BasicProvider, EcrProvider
from agent.images.layer import DirectorySource
from agent.images.naming import parse_reference
from agent.images.oci import OCI_INDEX
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import ImageSettings
from agent.model import DeploymentSpec, ModelRef
from tests.fixtures.harness import harness_down

pytestmark = pytest.mark.integration
RUN = uuid.uuid4().hex[:8]


class RecordingSession(requests.Session):
    """A requests session that remembers (method, url) of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any,
                **kwargs: Any) -> requests.Response:
        full = requests.Request(str(method), str(url), params=kwargs.get("params")).prepare().url
        self.calls.append((str(method), str(full)))
        return super().request(method, url, *args, **kwargs)


def _images(reg: Registries, **extra: Any) -> ImageSettings:
    return ImageSettings.model_validate({"insecure_registries": [reg.plain],
                                         "ca_bundle": str(reg.ca_cert), **extra})


def _token_registry(reg: Registries, password: str | None = None,
                    session: requests.Session | None = None) -> Registry:
    if not reg.token:
        harness_down("the bearer-token registry only comes with the harness")
    assert reg.token_user
    provider = BasicProvider(reg.token_user, password or reg.token_password)
    return Registry(reg.token, _images(reg), provider, session=session)


def test_bearer_mount_asks_pull_on_the_base_and_caches_tokens(
        registries: Registries, base_images: dict[str, str]) -> None:
    session = RecordingSession()
    registry = _token_registry(registries, session=session)
    registry.ping()
    base = parse_reference(base_images["token-oci"])
    manifest = registry.resolve_image(base.repository, base.reference)
    target = f"models/token-{RUN}"
    for digest in [manifest.data["config"]["digest"],
                   *(layer["digest"] for layer in manifest.data["layers"])]:
        assert registry.mount_blob(target, digest, base.repository) is None
        assert registry.blob_exists(target, digest)
    token_calls = [url for method, url in session.calls if "/token" in url]
    mount_scope = [url for url in token_calls if "pull%2Cpush" in url
                   and f"repository%3A{base.repository.replace('/', '%2F')}%3Apull" in url]
    assert mount_scope, token_calls
    # one token per distinct scope set: mounts of two blobs share the cached token
    assert len(token_calls) == len(set(token_calls))
    assert registry.stats["mounts"] == 1 + len(manifest.data["layers"])


def test_bearer_wrong_password_says_check_credentials(registries: Registries) -> None:
    secret = "not-the-password-42"
    registry = _token_registry(registries, password=secret)
    with pytest.raises(RegistryError) as caught:
        registry.ping()
        registry.manifest_digest("base/tiny", "oci")
    assert f"check the credentials for {registries.token}" in str(caught.value)
    assert secret not in str(caught.value)


def test_build_into_token_registry(registries: Registries, base_images: dict[str, str],
                                   tmp_path: Path) -> None:
    if not registries.token:
        harness_down("the bearer-token registry only comes with the harness")
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.pkl").write_bytes(os.urandom(50_000))
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.token}/models/tok-{RUN}",
        "ca_bundle": str(registries.ca_cert),
        "credentials": {"provider": "basic", "username": registries.token_user,
                        "password": registries.token_password},
    }})
    spec = DeploymentSpec(id="tok", model=ModelRef(id="m1", uri="file:///x"))
    built = build_model_image(spec, base_images["token-oci"], "/mnt/models", settings,
                              lambda *a, **k: None, source=DirectorySource(model))
    again = build_model_image(spec, base_images["token-oci"], "/mnt/models", settings,
                              lambda *a, **k: None, source=DirectorySource(model))
    assert not built.reused and again.reused and again.digest == built.digest


def test_chunked_upload_respects_chunk_size_and_digest(registries: Registries) -> None:
    settings = _images(registries, chunk_size_bytes=64 * 1024, upload_mode="chunked")
    session = RecordingSession()
    registry = Registry(registries.plain, settings, session=session)
    registry.ping()
    data = os.urandom(300_000)
    upload = registry.start_upload(f"models/chunks-{RUN}")
    for start in range(0, len(data), 10_000):
        upload.write(data[start:start + 10_000])
    digest = upload.finish(sha256_digest(data))
    patches = [url for method, url in session.calls if method == "PATCH"]
    assert len(patches) == 300_000 // (64 * 1024)
    assert registry.get_blob(f"models/chunks-{RUN}", digest) == data


def test_streamed_upload_sends_any_size_in_one_patch(registries: Registries) -> None:
    """The default: POST, one streamed PATCH, PUT ?digest= (as docker push): 3 requests."""
    session = RecordingSession()
    registry = Registry(registries.plain, _images(registries), session=session)
    registry.ping()
    data = os.urandom(3 * 1024 * 1024 + 12_345)
    upload = registry.start_upload(f"models/stream-{RUN}")
    for start in range(0, len(data), 100_000):
        upload.write(data[start:start + 100_000])
    assert upload.digest() == sha256_digest(data)  # hashed by the sending thread
    digest = upload.finish(sha256_digest(data))
    methods = [method for method, _ in session.calls if method in ("POST", "PATCH", "PUT")]
    assert methods == ["POST", "PATCH", "PUT"]
    assert registry.stats["uploaded_bytes"] == len(data)
    assert registry.get_blob(f"models/stream-{RUN}", digest) == data


def test_index_resolves_linux_amd64(registries: Registries, base_images: dict[str, str]) -> None:
    registry = Registry(registries.plain, _images(registries))
    registry.ping()
    base = parse_reference(base_images["plain-oci"])
    manifest = registry.resolve_image(base.repository, base.reference)
    index = {
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": manifest.media_type, "digest": manifest.digest,
             "size": len(manifest.raw), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    raw = json.dumps(index).encode()
    registry.put_manifest(base.repository, f"index-{RUN}", raw, OCI_INDEX)
    resolved = registry.resolve_image(base.repository, f"index-{RUN}")
    assert resolved.digest == manifest.digest and not resolved.is_index
    with pytest.raises(RegistryError, match="has no linux/arm64 manifest"):
        registry.resolve_image(base.repository, f"index-{RUN}", platform=("linux", "arm64"))


class _FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards to a registry; answers 503 + Retry-After to the first N requests. Counts."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream = upstream
        self.failures = failures
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _FlakyProxy

    def _handle(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        if self.server.failures > 0:
            self.server.failures -= 1
            self.send_response(503)
            self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
        answer = requests.request(self.command, f"http://{self.server.upstream}{self.path}",
                                  headers=headers, data=body, allow_redirects=False, timeout=30)
        self.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.content)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def flaky(registries: Registries) -> Iterator[_FlakyProxy]:
    proxy = _FlakyProxy(registries.plain, failures=2)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_5xx_is_retried_honouring_retry_after(registries: Registries,
                                              flaky: _FlakyProxy) -> None:
    host = f"127.0.0.1:{flaky.server_address[1]}"
    registry = Registry(host, ImageSettings(insecure_registries=[host]))
    started = time.monotonic()
    registry.ping()
    assert flaky.seen[:3] == ["GET /v2/"] * 3
    assert time.monotonic() - started >= 1.9  # Retry-After: 1, twice


def test_4xx_is_not_retried(registries: Registries, flaky: _FlakyProxy) -> None:
    flaky.failures = 0
    host = f"127.0.0.1:{flaky.server_address[1]}"
    registry = Registry(host, ImageSettings(insecure_registries=[host]))
    with pytest.raises(RegistryError, match=r"answered 400|answered 404|BLOB_UNKNOWN|DIGEST"):
        registry.get_blob("base/nothing", "sha256:" + "0" * 64)
    assert len(flaky.seen) == 1


def test_plain_registry_is_not_implicitly_insecure(registries: Registries) -> None:
    registry = Registry(registries.plain, ImageSettings())
    with pytest.raises(RegistryError, match=r"list it in images\.insecure_registries"):
        registry.ping()


def test_ecr_login_and_repository_creation_with_moto(
        registries: Registries, moto_endpoint: str, base_images: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """moto stands in for the ECR API (no real AWS here); the TLS registry accepts its login."""
    import boto3

    assert registries.ecr
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto_endpoint)
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(os.urandom(20_000))
    repo = f"models/ecr-{RUN}"
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.ecr}/{repo}",
        "ca_bundle": str(registries.ca_cert),
        "credentials": {"provider": "ecr", "ecr_create_repositories": True,
                        "aws_region": "us-east-1"},
    }})
    caplog.set_level(logging.DEBUG)
    spec = DeploymentSpec(id="ecr", model=ModelRef(id="m1", uri="file:///x"))
    built = build_model_image(spec, base_images["tls-oci"], "/mnt/models", settings,
                              lambda *a, **k: None, source=DirectorySource(model))
    assert built.reference.startswith(f"{registries.ecr}/{repo}:m-")
    ecr = boto3.client("ecr", region_name="us-east-1", endpoint_url=moto_endpoint)
    names = [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]]
    assert repo in names
    assert "123456789012-auth-token" not in caplog.text

    # moto's token arrives already expired: usable now, refetched later, never in a loop
    provider = EcrProvider("us-east-1", moto_endpoint)
    calls: list[int] = []
    original = provider._fetch
    provider._fetch = lambda host: (calls.append(1), original(host))[1]  # type: ignore[method-assign]
    for _ in range(5):
        assert provider.get(registries.ecr) is not None
    assert len(calls) == 1
    provider.ensure_repository(registries.ecr, repo)  # already exists: tolerated


def test_secrets_stay_out_of_logs_and_image(registries: Registries,
                                            base_images: dict[str, str], tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "x").write_bytes(b"x" * 1000)
    repo = f"models/secret-{RUN}"
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.tls}/{repo}",
        "ca_bundle": str(registries.ca_cert),
        "credentials": {"provider": "basic", "username": registries.tls_user,
                        "password": registries.tls_password},
    }})
    caplog.set_level(logging.DEBUG)
    events: list[Any] = []
    spec = DeploymentSpec(id="sec", model=ModelRef(id="m1", uri="file:///x"))
    built = build_model_image(spec, base_images["tls-oci"], "/mnt/models", settings,
                              lambda *a, **k: events.append((a, k)),
                              source=DirectorySource(model))
    registry = Registry(registries.tls, _images(registries),
                        BasicProvider(registries.tls_user, registries.tls_password))
    registry.ping()
    ref = parse_reference(built.reference)
    manifest = registry.get_manifest(ref.repository, ref.reference)
    assert manifest is not None
    config = registry.get_blob(ref.repository, manifest.data["config"]["digest"])
    secret = registries.tls_password
    b64 = hashlib.sha256(secret.encode()).hexdigest()  # never expected either
    for text in (caplog.text, repr(events), config.decode(), repr(settings.images)):
        assert secret not in text and b64 not in text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_skip_tls_verify_registry_needs_no_ca(registries: Registries) -> None:
    provider = BasicProvider(registries.tls_user, registries.tls_password)
    strict = Registry(registries.tls, ImageSettings(), provider)
    with pytest.raises(RegistryError, match="certificate not trusted"):
        strict.ping()
    lax = Registry(registries.tls, ImageSettings(skip_tls_verify_registries=[registries.tls]),
                   provider)
    lax.ping()
    assert lax.manifest_digest("base/tiny", "oci") is not None


def test_ecr_through_irsa_web_identity_with_moto_sts(
        registries: Registries, moto_endpoint: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """IRSA: no keys, only AWS_ROLE_ARN + a web identity token file; moto plays STS and ECR."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/image-builder")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert registries.ecr
    provider = EcrProvider("us-east-1")
    credential = provider.get(registries.ecr)
    assert credential is not None and credential.username == "AWS"
    registry = Registry(registries.ecr, _images(registries), provider)
    registry.ping()
    assert registry.manifest_digest("base/tiny", "oci")

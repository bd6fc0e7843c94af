"""gs:// against fake-gcs-server (the real emulator binary, via the harness or started locally)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import requests

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError

pytestmark = pytest.mark.integration


def _upload(endpoint: str, bucket: str, name: str, data: bytes) -> None:
    resp = requests.post(f"{endpoint}/upload/storage/v1/b/{bucket}/o",
                         params={"uploadType": "media", "name": name}, data=data, timeout=10)
    resp.raise_for_status()


@pytest.fixture(scope="session")
def bucket(gcs_endpoint: str) -> str:
    """One bucket per session (the tests only read it)."""
    name = f"art-{uuid.uuid4().hex[:8]}"
    requests.post(f"{gcs_endpoint}/storage/v1/b", params={"project": "test"},
                  data=json.dumps({"name": name}),
                  headers={"Content-Type": "application/json"}, timeout=10).raise_for_status()
    _upload(gcs_endpoint, name, "models/iris/model.pkl", b"pickle" * 1000)
    _upload(gcs_endpoint, name, "models/iris/sub/conf.json", b"{}")
    _upload(gcs_endpoint, name, "models/iris2/other", b"no")
    return name


def test_prefix_single_and_digest(gcs_endpoint: str, bucket: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    settings = ArtifactSettings()
    uri = f"gs://{bucket}/models/iris"
    with open_model(uri, settings) as src:
        digest = src.digest
        files = list(src.files())
        assert [f.path for f in files] == ["model.pkl", "sub/conf.json"]
        assert files[0].content_id.startswith("gcs-md5:")
    assert fetch_model(uri, tmp_path / "d", settings, expected_digest=digest) == digest
    assert (tmp_path / "d" / "model.pkl").read_bytes() == b"pickle" * 1000
    with open_model(uri + "/", settings) as src:
        assert src.digest == digest
    fetch_model(f"gs://{bucket}/models/iris/model.pkl", tmp_path / "s", settings)
    assert (tmp_path / "s" / "model.pkl").read_bytes() == b"pickle" * 1000


def test_settings_endpoint_and_missing(gcs_endpoint: str, bucket: str) -> None:
    settings = ArtifactSettings(gcs_endpoint_url=gcs_endpoint)
    with pytest.raises(ArtifactError, match=rf"gs://{bucket}/nope.*not found"):
        open_model(f"gs://{bucket}/nope", settings)
    with open_model(f"gs://{bucket}/models/iris/sub/", settings) as src:
        assert [f.path for f in src.files()] == ["conf.json"]
    paged = ArtifactSettings(gcs_endpoint_url=gcs_endpoint, list_page_size=1)
    with open_model(f"gs://{bucket}/models/", paged) as src:
        assert [f.path for f in src.files()] == ["iris/model.pkl", "iris/sub/conf.json",
                                                 "iris2/other"]


def _key_json(token_uri: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                       "private_key": pem, "client_email": "fetch@p.iam.gserviceaccount.com",
                       "client_id": "1", "token_uri": token_uri})


def test_service_account_key_from_secret(gcs_endpoint: str, bucket: str, tmp_path: Path) -> None:
    """The key JSON is used to mint an OAuth token at its token_uri (a local stand-in for
    oauth2.googleapis.com, which is unreachable here); the emulator ignores the token."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []
    answer = {"ok": True}

    class Token(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            seen.append(self.rfile.read(length).decode())
            if answer["ok"]:
                body = json.dumps({"access_token": "ya29.test", "expires_in": 3600,
                                   "token_type": "Bearer"}).encode()
                self.send_response(200)
            else:
                body = json.dumps({"error": "invalid_grant",
                                   "error_description": "Invalid JWT Signature."}).encode()
                self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        key = _key_json(f"http://127.0.0.1:{httpd.server_address[1]}/token")
        settings = ArtifactSettings(gcs_endpoint_url=gcs_endpoint, retries=0)
        fetch_model(f"gs://{bucket}/models/iris", tmp_path / "d", settings,
                    {"gcs-key.json": key})
        assert (tmp_path / "d" / "sub" / "conf.json").read_bytes() == b"{}"
        assert seen and "assertion=" in seen[0]
        answer["ok"] = False
        with pytest.raises(ArtifactError, match="credentials were refused") as err:
            open_model(f"gs://{bucket}/models/iris", settings,
                       {"GOOGLE_APPLICATION_CREDENTIALS_JSON": key})
        assert "PRIVATE KEY" not in str(err.value)
    finally:
        httpd.shutdown()
        httpd.server_close()

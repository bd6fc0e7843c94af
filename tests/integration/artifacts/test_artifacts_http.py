"""http(s) downloads against a real local HTTP server (stdlib http.server in a thread):
ranges, resume after a dropped connection, servers without ranges, bearer auth,
a private CA generated for the test."""

from __future__ import annotations

import datetime
import hashlib
import logging
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError

pytestmark = pytest.mark.integration

BODY = bytes(range(256)) * 4096  # 1 MiB


class State:
    def __init__(self) -> None:
        self.ranges = True
        self.etag: str | None = '"v1"'
        self.last_modified: str | None = None
        self.drop_once_at: int | None = None
        self.token: str | None = None
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            if state.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if state.etag:
                self.send_header("ETag", state.etag)
            if state.last_modified:
                self.send_header("Last-Modified", state.last_modified)
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()

        def _auth_ok(self) -> bool:
            if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False
            return True

        def do_HEAD(self) -> None:
            if not self._auth_ok():
                return
            if not self.path.endswith("/model.bin"):
                self.send_error(404)
                return
            self._headers(200, len(BODY), {})

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
            if not self._auth_ok():
                return
            if not self.path.endswith("/model.bin"):
                self.send_error(404)
                return
            start = 0
            if rng and state.ranges:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self._headers(206, len(BODY) - start,
                              {"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"})
            else:
                self._headers(200, len(BODY), {})
            payload = BODY[start:]
            drop = state.drop_once_at
            if drop is not None and drop > start:
                state.drop_once_at = None
                self.wfile.write(payload[: drop - start])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, State, ThreadingHTTPServer]]:
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state, httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_plain_download_and_digest_before_reading(server: Any, tmp_path: Path) -> None:
    url, state, _ = server
    with open_model(f"{url}/m/model.bin", ArtifactSettings()) as src:
        digest = src.digest
        assert not [r for r in state.requests if r[0].endswith("model.bin")]  # HEAD only
    assert fetch_model(f"{url}/m/model.bin", tmp_path / "d", ArtifactSettings()) == digest
    assert (tmp_path / "d" / "model.bin").read_bytes() == BODY
    state.etag = '"v2"'
    with open_model(f"{url}/m/model.bin", ArtifactSettings()) as src:
        assert src.digest != digest


def test_resume_with_range_after_dropped_connection(server: Any, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    url, state, _ = server
    state.drop_once_at = 300_000
    caplog.set_level(logging.INFO)
    fetch_model(f"{url}/m/model.bin", tmp_path / "d", ArtifactSettings())
    assert hashlib.sha256((tmp_path / "d" / "model.bin").read_bytes()).digest() == \
        hashlib.sha256(BODY).digest()
    gets = [r for r in state.requests if r[0].endswith("model.bin")]
    assert len(gets) == 2 and gets[1][1] is not None and gets[1][1].startswith("bytes=")
    assert int(gets[1][1].removeprefix("bytes=").rstrip("-")) > 0
    assert "resuming at byte" in caplog.text


def test_restart_without_range_support_is_logged(server: Any, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    url, state, _ = server
    state.ranges = False
    state.drop_once_at = 400_000
    caplog.set_level(logging.INFO)
    fetch_model(f"{url}/m/model.bin", tmp_path / "d", ArtifactSettings())
    assert (tmp_path / "d" / "model.bin").read_bytes() == BODY
    gets = [r for r in state.requests if r[0].endswith("model.bin")]
    assert len(gets) == 2 and gets[1][1] is None
    assert "does not support ranges; restarting" in caplog.text


def test_no_validators_hashes_while_reading(server: Any, tmp_path: Path) -> None:
    url, state, _ = server
    state.etag = None
    with open_model(f"{url}/m/model.bin", ArtifactSettings()) as src:
        files = list(src.files())
        assert files[0].content_id == "sha256:" + hashlib.sha256(BODY).hexdigest()
        digest = src.digest
    assert fetch_model(f"{url}/m/model.bin", tmp_path / "d", ArtifactSettings()) == digest
    state.last_modified = "Wed, 21 Oct 2026 07:28:00 GMT"
    with open_model(f"{url}/m/model.bin", ArtifactSettings()) as src:
        assert src.digest != digest  # identified by Last-Modified now, no body read


def test_bearer_token_and_errors(server: Any, tmp_path: Path) -> None:
    url, state, _ = server
    state.token = "tok-secret-42"
    with pytest.raises(ArtifactError, match="HTTP 401") as err:
        open_model(f"{url}/m/model.bin", ArtifactSettings())
    assert f"{url}/m/model.bin" in str(err.value)
    host = url.split("://", 1)[1]  # a token goes only to the host its secret names
    with pytest.raises(ArtifactError, match="HTTP 401") as err:
        open_model(f"{url}/m/model.bin", ArtifactSettings(), {"token": "wrong-tok", "host": host})
    assert "wrong-tok" not in str(err.value)
    fetch_model(f"{url}/m/model.bin", tmp_path / "d", ArtifactSettings(),
                {"token": "tok-secret-42", "host": host})
    assert (tmp_path / "d" / "model.bin").stat().st_size == len(BODY)
    with pytest.raises(ArtifactError, match="not found"):
        open_model(f"{url}/m/missing.bin", ArtifactSettings(),
                   {"token": "tok-secret-42", "host": host})


def _make_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "artifacts test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, cert_pem, key_pem = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


def test_https_with_private_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca, cert, key = _make_ca(tmp_path)
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    # the system bundle in REQUESTS_CA_BUNDLE must not override the configured CA
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/m/model.bin"
        with pytest.raises(ArtifactError, match="TLS verification failed") as err:
            open_model(url, ArtifactSettings(retries=0))
        assert url in str(err.value)
        state.drop_once_at = 200_000
        fetch_model(url, tmp_path / "d", ArtifactSettings(ca_bundle=ca))
        assert (tmp_path / "d" / "model.bin").read_bytes() == BODY
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tls_server(tmp_path: Path) -> tuple[str, Path, ThreadingHTTPServer]:
    tmp_path.mkdir()
    ca, cert, key = _make_ca(tmp_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(State()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{httpd.server_address[1]}/m/model.bin", ca, httpd


def test_ca_bundle_adds_to_the_default_roots(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """artifacts.ca_bundle (a private CA for the in-house store) must not make servers
    signed by the default roots fail. The default roots are stood in for by
    REQUESTS_CA_BUNDLE, which requests would otherwise let override the configured CA."""
    public_url, public_ca, public = _tls_server(tmp_path / "public")
    private_url, private_ca, private = _tls_server(tmp_path / "private")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(public_ca))
    try:
        settings = ArtifactSettings(ca_bundle=private_ca, retries=0)
        fetch_model(private_url, tmp_path / "a", settings)
        fetch_model(public_url, tmp_path / "b", settings)
        assert (tmp_path / "a" / "model.bin").read_bytes() == BODY
        assert (tmp_path / "b" / "model.bin").read_bytes() == BODY
    finally:
        for httpd in (public, private):
            httpd.shutdown()
            httpd.server_close()

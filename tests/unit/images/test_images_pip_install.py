"""pip for dependency layers against a real index: a local HTTP server that wants a login.

The index is a PEP 503 simple index served by http.server in the test (a harness server
would add nothing: pip only needs pages and a wheel); pip is the agent's own pip.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import stat
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import BuildError, InvalidActionError
from agent.images.base_python import BasePython
from agent.images.pip_install import check_python, install, pip_argv, pip_environment
from agent.images.settings import DependencySettings
from agent.logs import scrub

AGENT_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
BASE = BasePython(AGENT_PYTHON, "x86_64", "2.36", {}, "")
USER, PASSWORD = "deployer", "index-pass-7c1e9a"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def _wheel() -> bytes:
    files = {"demo_pkg/__init__.py": b"VALUE = 'x' * 400\n",
             "demo_pkg-1.0.dist-info/METADATA":
                 b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
             "demo_pkg-1.0.dist-info/WHEEL":
                 b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                 b"Tag: py3-none-any\n"}
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in files.items()) + "demo_pkg-1.0.dist-info/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("demo_pkg-1.0.dist-info/RECORD", record)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def index() -> Iterator[tuple[str, list[str]]]:
    """(the index URL, the Authorization headers it received)."""
    wheel = _wheel()
    digest = hashlib.sha256(wheel).hexdigest()
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="index"')
                self.end_headers()
                return
            if self.path.rstrip("/") == "/simple/demo-pkg":
                body = f'<a href="/files/{WHEEL}#sha256={digest}">{WHEEL}</a>'.encode()
            elif self.path == f"/files/{WHEEL}":
                body = wheel
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if b"<a" in body[:3] else
                             "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple", seen
    server.shutdown()
    server.server_close()


def _netrc(tmp_path: Path) -> Path:
    path = tmp_path / "secret" / "netrc"
    path.parent.mkdir()
    path.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    return path


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "work" / "site"
    site.mkdir(parents=True)
    return site


def test_index_login_reaches_pip_through_netrc_never_its_arguments(
        tmp_path: Path, index: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = index
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings = DependencySettings(index_url=url, index_credentials_file=_netrc(tmp_path))
    site = _site(tmp_path)
    install(["demo-pkg==1.0"], BASE, settings, site)
    assert (site / "demo_pkg" / "__init__.py").is_file()
    assert seen and all(h == seen[0] for h in seen) and seen[0].startswith("Basic ")
    argv = pip_argv(site, Path("r"), Path("c"), BASE, settings)
    assert not any(PASSWORD in a or USER in a for a in argv), argv
    assert scrub(f"pip said {PASSWORD}") == "pip said ***"  # registered with the scrubber


def test_without_the_login_pip_fails_with_a_clear_reason(
        tmp_path: Path, index: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HOME", str(tmp_path))  # a netrc of the agent's HOME is not used
    (tmp_path / ".netrc").write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    with pytest.raises((BuildError, InvalidActionError), match=r"pip: .*demo-pkg"):
        install(["demo-pkg==1.0"], BASE, DependencySettings(index_url=index[0]),
                _site(tmp_path))


def test_a_layer_over_max_layer_bytes_is_refused_naming_the_setting(
        tmp_path: Path, index: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings = DependencySettings(index_url=index[0], index_credentials_file=_netrc(tmp_path),
                                  max_layer_bytes=300)
    with pytest.raises(InvalidActionError, match=r"images\.dependencies\.max_layer_bytes"):
        install(["demo-pkg==1.0"], BASE, settings, _site(tmp_path))


def test_pip_environment_has_no_agent_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("MGMT_AGENT_CONTROL_PLANE__TOKEN", "cp-token-value")
    monkeypatch.setenv("PIP_INDEX_URL", "https://evil.example/simple")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    env = pip_environment(home, tmp, _netrc(tmp_path))
    assert set(env) <= {"PATH", "PYTHONPATH", "HOME", "TMPDIR", "NETRC", "PYTHONNOUSERSITE",
                        "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR",
                        "REQUESTS_CA_BUNDLE", "no_proxy"}, env
    assert env["HTTPS_PROXY"] == "http://proxy.corp:3128" and env["HOME"] == str(home)
    assert stat.S_IMODE(os.stat(env["NETRC"]).st_mode) == 0o600
    assert Path(env["NETRC"]).parent == home


def test_a_base_with_another_python_minor_is_refused() -> None:
    other = "3.9" if AGENT_PYTHON != "3.9" else "3.10"
    with pytest.raises(BuildError, match=rf"base image runs Python {other}.*"
                       r"images\.builder=kaniko"):
        check_python(BasePython(other, "x86_64", "2.36", {}, ""))
    check_python(BASE)

"""One private-CA setting (`tls.ca_bundle`) reaches every client and adds to the system roots.

The private CA is the harness's (it signed the TLS registry and the certificate the
reference control plane serves here). "System roots" are stood in for by a second CA made
here: `REQUESTS_CA_BUNDLE` points at it, and the agent takes that variable as its default
roots (agent/tls.py, as requests does), so an endpoint signed by it plays a public
https site. Before the fix, a CA setting replaced those roots (public sites failed) and
each client had its own setting.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.artifacts import fetch_model
from agent.config import Settings
from agent.controlplane import open_control_plane
from agent.errors import ControlPlaneError
from agent.images.auth import registry_provider
from agent.images.fetcher import fetcher_env
from agent.images.registry import Registry
from agent.plugins.kubernetes.probe import probe_url
from tests.fixtures.controlplane import command, free_port
from tests.security.conftest import Endpoint

pytestmark = pytest.mark.integration


def _public_ca(directory: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, its key), PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in public root")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "public")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "public-ca.crt", directory / "public.crt", directory / "public.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def public_site(endpoint: Callable[..., Endpoint], tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Endpoint:
    """An https endpoint the stand-in system roots trust (and a registry at /v2/)."""
    ca, cert, key = _public_ca(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    site = endpoint((cert, key))
    site.routes["/v2/"] = (200, {}, b"{}")
    return site


@pytest.fixture
def tls_control_plane(harness_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The reference control plane over https, with the certificate the harness CA signed."""
    tls = Path(harness_env["HARNESS_CA_CERT"]).parent
    port = free_port()
    env = {**os.environ, "MGMT_AGENT_CP_ADMIN_TOKEN": "adm_" + "x" * 24}
    log = (tmp_path / "cp.log").open("wb")
    process = subprocess.Popen(
        [*command(), "control-plane", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--db", str(tmp_path / "cp.db"), "--tls-cert", str(tls / "server.crt"),
         "--tls-key", str(tls / "server.key")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(f"{url}/api/v1/healthz", timeout=1,
                             verify=harness_env["HARNESS_CA_CERT"])
                break
            except requests.RequestException:
                assert process.poll() is None, (tmp_path / "cp.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


def _settings(harness_env: dict[str, str], control_plane: str, registry: Any) -> Settings:
    """Only `tls.ca_bundle` names the private CA; no client has its own."""
    return Settings.model_validate({
        "tls": {"ca_bundle": harness_env["HARNESS_CA_CERT"]},
        "control_plane": {"url": control_plane, "environment_id": "e1", "token": "t" * 20,
                          "max_consecutive_failures": 1},
        "images": {"retries": 0, "generated_image_repository": f"{registry.host}/models",
                   "credentials": {"username": registry.username,
                                   "password": registry.password}},
        "artifacts": {"retries": 0}})


def test_one_ca_setting_reaches_control_plane_registry_and_artifacts(
        harness_env: dict[str, str], tls_registry: Any, tls_control_plane: str,
        public_site: Endpoint, tmp_path: Path) -> None:
    settings = _settings(harness_env, tls_control_plane, tls_registry)
    # the control plane (private CA): TLS holds; it answers 401 for the unknown token
    with pytest.raises(ControlPlaneError) as err:
        open_control_plane(settings).pending()
    assert "401" in str(err.value) and "TLS" not in str(err.value), err.value
    # the private registry: TLS and the login hold
    images = settings.images
    registry = Registry(tls_registry.host, images, registry_provider(images, tls_registry.host))
    registry.ping()
    assert registry.manifest_digest("models/sec-tls", "1") is None
    # the public site (stand-in system roots): still trusted by every client
    Registry(public_site.host, images).ping()
    fetch_model(f"{public_site.url}/model.bin", tmp_path / "m", settings.artifacts)
    assert (tmp_path / "m" / "model.bin").read_bytes() == public_site.body
    assert {s.path for s in public_site.seen} == {"/v2/", "/model.bin"}
    # the public-URL probe of a deployment (a private-CA ingress) trusts it too
    assert probe_url(f"{tls_control_plane}/api/v1/healthz", settings.plugin.kubernetes,
                     wait=0) == (True, "ok")


def test_a_ca_setting_never_replaces_the_system_roots(harness_env: dict[str, str],
                                                      public_site: Endpoint) -> None:
    """A client's own CA (here control_plane.ca_bundle) adds to the roots as tls.ca_bundle
    does: the public site stays reachable through the control-plane client."""
    settings = Settings.model_validate({"control_plane": {
        "url": public_site.url, "environment_id": "e1", "token": "t" * 20,
        "ca_bundle": harness_env["HARNESS_CA_CERT"], "max_consecutive_failures": 1}})
    public_site.routes["/api/v1/environments/e1/actions"] = (
        200, {"Content-Type": "application/json"}, b'{"actions": []}')
    assert open_control_plane(settings).pending() == []


def test_in_pod_fetch_model_trusts_the_mounted_ca(harness_env: dict[str, str],
                                                  endpoint: Callable[..., Endpoint],
                                                  tmp_path: Path) -> None:
    """The storage initializer / Kaniko fetch step: `fetcher_env` names the mounted CA file;
    the command run with that environment (the file at a local path here) trusts it."""
    tls = Path(harness_env["HARNESS_CA_CERT"]).parent
    private = endpoint((tls / "server.crt", tls / "server.key"))
    settings = Settings.model_validate({"tls": {
        "ca_bundle": harness_env["HARNESS_CA_CERT"], "ca_config_map": "agent-ca"}})
    env = fetcher_env(settings.artifacts, settings.tls)
    assert env.ca_volume == {"name": "agent-ca", "configMap": {
        "name": "agent-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    env["MGMT_AGENT_TLS__CA_BUNDLE"] = harness_env["HARNESS_CA_CERT"]  # where the pod mounts it
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("MGMT_AGENT_", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"))}
    run = [sys.executable, "-m", "agent.cli", "fetch-model", f"{private.url}/model.bin",
           str(tmp_path / "d"), "--set", "artifacts.retries=0"]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=120, env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    without = subprocess.run([*run[:-3], str(tmp_path / "e"), *run[-2:]], capture_output=True,
                             text=True, timeout=120, env=clean)
    assert without.returncode == 1 and "TLS" in without.stderr

"""A deployment names a cloud metadata address (or a name or redirect leading to one).

Refusals happen before any packet leaves: metadata addresses are never contacted by
these tests. Loopback stays allowed by default (docs/security.md says why), so a test
that needs a blocked address *it can really reach* blocks 127.0.0.0/8 explicitly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.artifacts.egress import BlockedAddressError, EgressPolicy
from agent.errors import ArtifactError
from tests.security.conftest import Endpoint

METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",  # ECS task role
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS IMDS over IPv6
    "http://[::ffff:169.254.169.254]/latest/",  # IPv4-mapped
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one number
    "http://0251.0376.0251.0376/latest/",  # ...in octal
    "http://100.100.100.200/latest/meta-data/",  # Alibaba
]


@pytest.mark.parametrize("url", METADATA_URLS)
def test_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(BlockedAddressError, match=r"artifacts\.blocked_networks") as err:
        open_model(url, ArtifactSettings(retries=0))
    assert "artifacts.allowed_networks" in str(err.value)  # says how to allow it


def test_oci_and_mlflow_are_guarded_too() -> None:
    with pytest.raises(BlockedAddressError, match=r"169\.254\.0\.0/16"):
        open_model("oci://169.254.169.254/model:1", ArtifactSettings(retries=0))
    settings = ArtifactSettings(mlflow_tracking_uri="http://169.254.169.254:5000", retries=0)
    with pytest.raises(BlockedAddressError, match="MLflow tracking server"):
        open_model("models:/m/1", settings)


def test_every_resolved_address_is_checked(endpoint: Callable[[], Endpoint]) -> None:
    """`localhost` resolves (here) to loopback; blocking 127.0.0.0/8 must catch the name."""
    store = endpoint()
    port = store.url.rsplit(":", 1)[1]
    settings = ArtifactSettings(blocked_networks=["127.0.0.0/8", "::1/128"], retries=0)
    with pytest.raises(BlockedAddressError, match=r"localhost \((127\.0\.0\.1|::1)\)"):
        open_model(f"http://localhost:{port}/model.bin", settings)
    assert store.seen == []
    allowed = settings.model_copy(update={"allowed_networks": ["127.0.0.1/32", "::1/128"]})
    with open_model(f"http://localhost:{port}/model.bin", allowed) as src:
        assert [f.path for f in src.files()] == ["model.bin"]


def test_redirect_to_metadata_is_refused_before_connecting(endpoint: Callable[[], Endpoint],
                                                           tmp_path: Path) -> None:
    store = endpoint()
    store.routes["/model.bin"] = (
        302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")
    with pytest.raises(ArtifactError, match=r"169\.254\.169\.254.*blocked_networks"):
        fetch_model(f"{store.url}/model.bin", tmp_path / "d", ArtifactSettings(retries=0))
    assert not (tmp_path / "d").exists()


def test_connection_check_catches_an_address_that_changed_after_the_check() -> None:
    """DNS rebinding: the name passed the first check, the socket landed elsewhere."""
    server = socket.create_server(("127.0.0.1", 0))  # the kernel completes the handshake
    sock = socket.create_connection(server.getsockname())
    policy = EgressPolicy(["127.0.0.0/8"])
    with pytest.raises(BlockedAddressError, match="refusing to connect"):
        policy.check_peer(sock, "models.example.com")
    assert sock.fileno() == -1  # closed
    server.close()


def test_loopback_is_allowed_by_default(endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    store = endpoint()
    fetch_model(f"{store.url}/model.bin", tmp_path / "d", ArtifactSettings())
    assert (tmp_path / "d" / "model.bin").exists()


def test_mlflow_version_pointing_at_metadata_is_refused(endpoint: Callable[[], Endpoint]) -> None:
    """A registry answers that version 1 lives on the metadata service.

    A recording endpoint plays the MLflow server: the real MLflow 3 server (harness)
    itself refuses http(s) sources unless MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES
    is set on it, so only a server configured that way (or an older one) answers this.
    """
    import json

    registry = endpoint()
    version = {"model_version": {"version": "1", "source": "http://169.254.169.254/m.tgz"}}
    registry.routes["/api/2.0/mlflow/model-versions/get"] = (
        200, {"Content-Type": "application/json"}, json.dumps(version).encode())
    registry.routes["/api/2.0/mlflow/model-versions/get-download-uri"] = (
        200, {"Content-Type": "application/json"},
        json.dumps({"artifact_uri": "http://169.254.169.254/latest/meta-data/m.tgz"}).encode())
    with pytest.raises(BlockedAddressError) as err:
        open_model("models:/m/1", ArtifactSettings(mlflow_tracking_uri=registry.url, retries=0))
    assert "169.254.169.254" in str(err.value) and "models:/m/1" in str(err.value)

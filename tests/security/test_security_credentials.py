"""A deployment tries to get the credentials of a Secret sent to a host of its choosing.

The attacker controls the model URI (control-plane admin, MLflow tagger); the Secret
is the ops' (or the default credentials secret). Real HTTP servers on 127.0.0.1 record
every Authorization header they receive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.artifacts.secrets import check_credentials_secret, read_credentials_secret
from agent.errors import ArtifactError
from tests.security.conftest import Endpoint

TOKEN = "canary-token-1f2e3d4c5b6a"


def test_token_without_host_binding_is_never_sent(endpoint: Callable[[], Endpoint],
                                                  tmp_path: Path) -> None:
    attacker = endpoint()
    with pytest.raises(ArtifactError, match="no 'host' key") as err:
        fetch_model(f"{attacker.url}/steal", tmp_path / "d", ArtifactSettings(),
                    {"token": TOKEN})
    assert f"add host: {attacker.host}" in str(err.value)
    assert TOKEN not in str(err.value)
    assert attacker.seen == []  # refused before any request


def test_token_goes_only_to_its_host(endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    store, attacker = endpoint(), endpoint()
    secret = {"token": TOKEN, "host": store.host}
    with pytest.raises(ArtifactError, match=f"bound to {store.host}, not {attacker.host}"):
        open_model(f"{attacker.url}/model.bin", ArtifactSettings(), secret)
    assert attacker.seen == []
    fetch_model(f"{store.url}/model.bin", tmp_path / "d", ArtifactSettings(), secret)
    assert store.authorizations() and set(store.authorizations()) == {f"Bearer {TOKEN}"}


def test_scheme_in_the_binding_must_match(endpoint: Callable[[], Endpoint]) -> None:
    store = endpoint()
    secret = {"Authorization": f"Basic {TOKEN}", "host": f"https://{store.host}"}
    with pytest.raises(ArtifactError, match="bound to https://"):
        open_model(f"{store.url}/model.bin", ArtifactSettings(), secret)  # plain http
    assert store.seen == []


def test_redirect_to_another_host_does_not_carry_the_token(endpoint: Callable[[], Endpoint],
                                                           tmp_path: Path) -> None:
    store, attacker = endpoint(), endpoint()
    store.routes["/model.bin"] = (302, {"Location": f"{attacker.url}/model.bin"}, b"")
    fetch_model(f"{store.url}/model.bin", tmp_path / "d", ArtifactSettings(),
                {"token": TOKEN, "host": store.host})
    assert (tmp_path / "d" / "model.bin").exists()  # followed...
    assert attacker.seen and attacker.authorizations() == []  # ...without the credential


def _oci_registry(ep: Endpoint) -> None:
    """The attacker's 'registry' asks for Basic auth and records what it gets."""
    ep.routes["/v2/"] = (401, {"WWW-Authenticate": 'Basic realm="x"'}, b"")
    ep.routes["/v2/m/manifests/1"] = (401, {"WWW-Authenticate": 'Basic realm="x"'}, b"")


def test_registry_password_is_not_sent_to_the_deployments_registry(
        endpoint: Callable[[], Endpoint]) -> None:
    attacker = endpoint()
    _oci_registry(attacker)
    settings = ArtifactSettings(oci_insecure_registries=[attacker.host], retries=0)
    with pytest.raises(ArtifactError, match="no 'host' key"):
        open_model(f"oci://{attacker.host}/m:1", settings,
                   {"username": "ops", "password": TOKEN})
    with pytest.raises(ArtifactError, match=r"bound to registry\.example\.com"):
        open_model(f"oci://{attacker.host}/m:1", settings,
                   {"username": "ops", "password": TOKEN, "host": "registry.example.com"})
    assert attacker.authorizations() == []


@pytest.mark.integration
def test_bound_registry_login_works(tls_registry: Any, harness_env: dict[str, str],
                                    tmp_path: Path) -> None:
    """The binding does not get in the way of the registry it names (basic-auth TLS registry)."""
    settings = ArtifactSettings(ca_bundle=Path(harness_env["HARNESS_CA_CERT"]), retries=0)
    secret = {"username": tls_registry.username, "password": tls_registry.password,
              "host": tls_registry.host}
    with pytest.raises(ArtifactError) as err:  # logged in: the image simply is not there
        open_model(f"oci://{tls_registry.host}/no/such-model:1", settings, secret)
    assert "not found" in str(err.value) and "refused" not in str(err.value)


class _Kube:
    """KubeClient's `get` over an in-memory Secret: the policy is pure logic on the
    Secret's name and labels; the real client is the kubernetes plugin's concern."""

    def __init__(self, secrets: dict[str, dict[str, Any]]) -> None:
        self.secrets = secrets

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        assert (api_version, kind) == ("v1", "Secret")
        return self.secrets.get(name)


def test_deployments_may_only_name_secrets_the_policy_allows() -> None:
    import base64

    data = {"token": base64.b64encode(TOKEN.encode()).decode()}
    kube = _Kube({
        "agent-token": {"metadata": {"name": "agent-token"}, "data": data},
        "models-s3": {"metadata": {"labels": {"management-agent.io/model-credentials": "true"}},
                      "data": data},
        "ops-default": {"metadata": {}, "data": data},
    })
    settings = ArtifactSettings(credentials_secret_prefix="models-",
                                credentials_secret_label="management-agent.io/model-credentials",
                                default_credentials_secret="ops-default")
    with pytest.raises(ArtifactError, match="must start with 'models-'"):
        read_credentials_secret(kube, "agent-token", settings)
    assert read_credentials_secret(kube, "models-s3", settings) == {"token": TOKEN}
    assert read_credentials_secret(kube, "ops-default", settings) == {"token": TOKEN}
    with pytest.raises(ArtifactError, match="lacks the label a=b"):
        check_credentials_secret("models-x", {"a": "c"}, ArtifactSettings(
            credentials_secret_label="a=b"))
    check_credentials_secret("anything", None, ArtifactSettings())  # no policy: allowed

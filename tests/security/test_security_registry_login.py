"""A deployment names a registry of its choosing to get the agent's registry login (item 2).

`model.image` (and an MLflow version's `image` tag, which becomes it), a profile's
or `config.base_image`'s base image and a registry's token `realm` all choose the
host the agent talks to. The attacker's registry is a recording HTTP server on
127.0.0.1 (tests/security/conftest.py: a fake is enough for the attacker, what
matters is which Authorization headers reach it); the registry the login was
configured for is the harness's real basic-auth TLS (and bearer-token) registry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import Settings
from agent.errors import RegistryError
from agent.images import build_model_image
from agent.images.auth import registry_provider
from agent.images.content import address
from agent.images.naming import parse_reference
from agent.images.registry import Registry
from agent.images.settings import ImageSettings
from agent.model import DeploymentSpec, ModelRef
from tests.security.conftest import Endpoint

PASSWORD = "canary-registry-pw-7c1d9e"


def _basic_registry(ep: Endpoint) -> None:
    """The attacker's 'registry' asks for Basic auth everywhere and records what it gets."""
    for path in ("/v2/", "/v2/stolen/manifests/1", "/v2/base/manifests/1"):
        ep.routes[path] = (401, {"WWW-Authenticate": 'Basic realm="registry"'}, b"")


def _settings(home: str, attacker: Endpoint, **images: Any) -> Settings:
    """The ops' configuration: a basic login for `home`; the attacker's host is even
    listed as plain http, so nothing but the binding keeps the login away from it."""
    return Settings.model_validate({"images": {
        "generated_image_repository": f"{home}/models",
        "insecure_registries": [attacker.host], "retries": 0,
        "credentials": {"username": "ops", "password": PASSWORD}, **images}})


def test_model_image_on_another_registry_gets_no_login(endpoint: Callable[[], Endpoint]
                                                       ) -> None:
    attacker = endpoint()
    _basic_registry(attacker)
    settings = _settings("registry.example.com", attacker)
    spec = DeploymentSpec(id="d1", model=ModelRef(id="m", image=f"{attacker.host}/stolen:1"))
    built = build_model_image(spec, "unused", "/mnt/models", settings, lambda *a, **k: None)
    assert built.reference == f"{attacker.host}/stolen:1"  # used as named...
    assert attacker.seen  # ...the agent did look at it (the existence check)...
    assert attacker.authorizations() == []  # ...anonymously


@pytest.mark.integration
def test_base_image_on_another_registry_gets_no_login(
        endpoint: Callable[[], Endpoint], tls_registry: Any, harness_env: dict[str, str]
) -> None:
    """The target registry (real, basic auth over TLS) is logged into; the base image's
    registry, which a deployment's config.base_image chose, is asked anonymously."""
    attacker = endpoint()
    _basic_registry(attacker)
    settings = _settings(tls_registry.host, attacker,
                         ca_bundle=harness_env["HARNESS_CA_CERT"],
                         credentials={"username": tls_registry.username,
                                      "password": tls_registry.password})
    target = parse_reference(f"{tls_registry.host}/models/sec-login")
    with pytest.raises(RegistryError) as err:
        address(settings.images, target, f"{attacker.host}/base:1", "sha256:" + "0" * 64, "r")
    assert f"registry {attacker.host} asks for a login (401) and none is configured" in \
        str(err.value)
    assert attacker.seen and attacker.authorizations() == []


def _logged_in_client(registry: Endpoint, challenge: str) -> tuple[Registry, ImageSettings]:
    """A client (and its settings) with a basic login bound to `registry`, which answers
    every call with the Bearer `challenge`."""
    for path in ("/v2/", "/v2/m/manifests/1"):
        registry.routes[path] = (401, {"WWW-Authenticate": challenge}, b"")
    images = ImageSettings.model_validate({
        "generated_image_repository": f"{registry.host}/models",
        "insecure_registries": [registry.host], "retries": 0,
        "credentials": {"username": "ops", "password": PASSWORD}})
    return Registry(registry.host, images, registry_provider(images, registry.host)), images


def test_token_realm_over_plain_http_is_refused(endpoint: Callable[[], Endpoint]) -> None:
    registry, realm = endpoint(), endpoint()
    client, _ = _logged_in_client(registry, f'Bearer realm="{realm.url}/token",service="r"')
    with pytest.raises(RegistryError, match=r"token service over plain http \(http://127") as err:
        client.ping()
    assert f"list {realm.host} in images.insecure_registries" in str(err.value)
    assert realm.seen == []  # not even an anonymous request


def test_token_realm_on_another_host_gets_no_login(endpoint: Callable[[], Endpoint]) -> None:
    """127.0.0.1 names a token service on `localhost`: another host name, refused before
    any connection; listing it in images.credentials.hosts lets the login go there."""
    registry = endpoint()
    port = registry.host.rsplit(":", 1)[1]
    client, images = _logged_in_client(registry,
                                       f'Bearer realm="https://localhost:{port}/token"')
    with pytest.raises(RegistryError, match="names a token service on another host") as err:
        client.ping()
    assert "add it to images.credentials.hosts" in str(err.value)
    assert registry.authorizations() == []
    listed = images.model_copy(update={"credentials": images.credentials.model_copy(
        update={"hosts": [f"localhost:{port}"]})})
    client = Registry(registry.host, listed, registry_provider(listed, registry.host))
    with pytest.raises(RegistryError, match="TLS handshake with the token service"):  # followed
        client.ping()


@pytest.mark.integration
def test_bound_logins_still_work_with_basic_and_bearer_registries(
        tls_registry: Any, token_registry: Any, harness_env: dict[str, str],
        tmp_path: Path) -> None:
    """The binding does not get in the way: the generated repository's registry (basic)
    and a listed one (bearer, its token service on the same host name) log in."""
    images = ImageSettings.model_validate({
        "generated_image_repository": f"{tls_registry.host}/models",
        "ca_bundle": harness_env["HARNESS_CA_CERT"], "retries": 0,
        "credentials": {"username": tls_registry.username, "password": tls_registry.password,
                        "hosts": [token_registry.host]}})
    basic = Registry(tls_registry.host, images, registry_provider(images, tls_registry.host))
    basic.ping()
    assert basic.manifest_digest("models/sec-none", "1") is None  # 404, not 401
    bearer_images = ImageSettings.model_validate({
        **images.model_dump(exclude={"credentials"}),
        "credentials": {"username": token_registry.username,
                        "password": token_registry.password, "hosts": [token_registry.host]}})
    bearer = Registry(token_registry.host, bearer_images,
                      registry_provider(bearer_images, token_registry.host))
    bearer.ping()
    assert bearer.manifest_digest("models/sec-none", "1") is None

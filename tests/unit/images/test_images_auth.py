"""Credential providers: docker config formats, provider choice, expiry, secrecy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from agent.errors import RegistryError
from agent.images import auth
from agent.images.auth import (
    AnonymousProvider,
    BasicProvider,
    Credential,
    DockerConfigProvider,
    EcrProvider,
    GoogleProvider,
    provider_for,
    registry_provider,
)
from agent.images.settings import ImageSettings, RegistryCredentials

SECRET = "pa55-W0rd-never-shown"


def test_docker_config_auth_field_and_username_password(tmp_path: Path) -> None:
    config = {"auths": {
        "https://myacr.azurecr.io/v1/": {"auth": base64.b64encode(
            f"00000000-app:{SECRET}".encode()).decode()},
        "harbor.corp:8443": {"username": "robot$ci", "password": SECRET},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:x").decode()},
    }}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    provider = DockerConfigProvider.from_file(path)
    assert provider.get("myacr.azurecr.io") == Credential("00000000-app", SECRET)
    assert provider.get("harbor.corp:8443") == Credential("robot$ci", SECRET)
    assert provider.get("registry-1.docker.io") == Credential("hub", "x")
    assert provider.get("other.io") is None


def test_kubernetes_secret_formats() -> None:
    token = "eyJhbGciOi-openshift-sa-token"
    legacy = {".dockercfg": json.dumps({
        "image-registry.openshift-image-registry.svc:5000": {"username": "serviceaccount",
                                                             "password": token}})}
    provider = DockerConfigProvider.from_secret_data(legacy)
    assert provider.get("image-registry.openshift-image-registry.svc:5000") == \
        Credential("serviceaccount", token)
    modern = {".dockerconfigjson": json.dumps({"auths": {"r.io": {"identitytoken": "rt"}}})}
    assert DockerConfigProvider.from_secret_data(modern).get("r.io") == \
        Credential("00000000-0000-0000-0000-000000000000", "rt")


def test_credential_repr_hides_the_secret() -> None:
    text = repr(Credential("user", SECRET)) + str(Credential("user", SECRET))
    assert SECRET not in text and "user" in text


@pytest.mark.parametrize(("host", "settings", "kind"), [
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", {}, EcrProvider),
    ("europe-west1-docker.pkg.dev", {}, GoogleProvider),
    ("gcr.io", {}, GoogleProvider),
    ("eu.gcr.io", {}, GoogleProvider),
    ("r.io", {"username": "u", "password": "p", "hosts": ["r.io"]}, BasicProvider),
    ("r.io", {"username": "u", "password": "p"}, AnonymousProvider),  # not bound to r.io
    ("evil.io", {"username": "u", "password": "p", "hosts": ["r.io"]}, AnonymousProvider),
    ("evil.io", {"provider": "ecr"}, AnonymousProvider),  # ECR logins go to ECR hosts only
    ("evil.io", {"provider": "gcp"}, AnonymousProvider),
    ("evil.azurecr.io.evil.io", {"provider": "acr"}, AnonymousProvider),
    ("r.io", {}, AnonymousProvider),
    ("r.io", {"provider": "anonymous", "username": "u"}, AnonymousProvider),
])
def test_auto_provider_choice(host: str, settings: dict[str, str], kind: type) -> None:
    provider = provider_for(RegistryCredentials.model_validate(settings), host)
    assert type(provider) is kind


def test_credentials_are_bound_to_the_generated_repository_host() -> None:
    images = ImageSettings.model_validate({
        "generated_image_repository": "push.example.com:5000/models",
        "credentials": {"username": "u", "password": "p", "hosts": ["Mirror.example.com"]},
    })
    assert type(registry_provider(images, "push.example.com:5000")) is BasicProvider
    assert type(registry_provider(images, "mirror.example.com")) is BasicProvider
    for other in ("push.example.com", "push.example.com:5001", "evil.example.com"):
        assert type(registry_provider(images, other)) is AnonymousProvider
    # base images: the target's credentials only on bound hosts, base_credentials on theirs
    assert type(registry_provider(images, "evil.example.com", base=True)) is AnonymousProvider
    with_base = images.model_copy(update={"base_credentials": RegistryCredentials(
        username="b", password="q", hosts=["base.example.com"])})
    assert registry_provider(with_base, "base.example.com", base=True).get(
        "base.example.com") == Credential("b", "q")
    assert type(registry_provider(with_base, "push.example.com:5000", base=True)) is \
        AnonymousProvider


def test_auto_picks_docker_config_when_present(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"auths": {}}')
    provider = provider_for(RegistryCredentials(docker_config_file=path), "r.io")
    assert isinstance(provider, DockerConfigProvider)


def test_bad_docker_config_error_has_no_content(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"auths": {"r.io": {"auth": "' + SECRET + '"')
    with pytest.raises(RegistryError) as caught:
        provider_for(RegistryCredentials(provider="dockerconfig", docker_config_file=path), "r.io")
    assert SECRET not in str(caught.value)


def test_basic_password_file_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("one\n")
    provider = BasicProvider("u", password_file=path)
    assert provider.get("r.io") == Credential("u", "one")
    path.write_text("two\n")
    assert provider.get("r.io") == Credential("u", "two")


class _CountingEcr(EcrProvider):
    def __init__(self, lifetimes: list[float]) -> None:
        super().__init__("us-east-1")
        self.lifetimes = lifetimes
        self.calls = 0

    def _fetch(self, registry: str) -> tuple[Credential, float]:
        self.calls += 1
        return Credential("AWS", f"token-{self.calls}"), auth.time.time() + self.lifetimes.pop(0)


def test_ecr_token_refreshed_before_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "time", lambda: now[0])
    provider = _CountingEcr([3600.0, 3600.0])
    assert provider.get("r") == Credential("AWS", "token-1")
    now[0] += 3000  # 10 minutes left: still fine
    assert provider.get("r") == Credential("AWS", "token-1")
    now[0] += 400  # < 5 minutes left: refresh
    assert provider.get("r") == Credential("AWS", "token-2") and provider.calls == 2


def test_ecr_already_expired_token_is_used_then_refetched_without_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "time", lambda: now[0])
    provider = _CountingEcr([-60.0, -60.0, -60.0])
    for _ in range(10):
        assert provider.get("r") == Credential("AWS", "token-1")
    assert provider.calls == 1
    now[0] += auth.EXPIRED_TOKEN_GRACE + 1
    assert provider.get("r") == Credential("AWS", "token-2") and provider.calls == 2
    provider.invalidate("r")
    assert provider.get("r") == Credential("AWS", "token-3")


def test_auto_uses_ecr_for_the_override_host() -> None:
    settings = RegistryCredentials(ecr_registry_override="127.0.0.1:5000")
    assert isinstance(provider_for(settings, "127.0.0.1:5000"), EcrProvider)
    assert isinstance(provider_for(settings, "127.0.0.1:5001"), AnonymousProvider)
    explicit = RegistryCredentials(provider="ecr", ecr_registry_override="127.0.0.1:5000")
    assert isinstance(provider_for(explicit, "127.0.0.1:5000"), EcrProvider)
    assert isinstance(provider_for(explicit, "127.0.0.1:5001"), AnonymousProvider)


def test_google_provider_refreshes_default_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """google-auth's default chain is replaced by a stand-in: no metadata server here."""
    import datetime

    import google.auth

    class FakeCredentials:
        token: str | None = None
        expiry: datetime.datetime | None = None
        refreshed = 0

        def refresh(self, request: object) -> None:
            self.refreshed += 1
            self.token = f"ya29.access-{self.refreshed}"
            self.expiry = datetime.datetime.utcnow() + datetime.timedelta(hours=1)

    fake = FakeCredentials()
    monkeypatch.setattr(google.auth, "default", lambda scopes=None: (fake, "project"))
    provider = GoogleProvider()
    assert provider.get("europe-docker.pkg.dev") == Credential("oauth2accesstoken",
                                                               "ya29.access-1")
    assert provider.get("europe-docker.pkg.dev") == Credential("oauth2accesstoken",
                                                               "ya29.access-1")
    assert fake.refreshed == 1


def test_a_base_image_login_must_name_its_registry() -> None:
    with pytest.raises(ValueError, match=r"base_credentials.hosts is empty"):
        ImageSettings.model_validate({"base_credentials": {"username": "u", "password": "p"}})
    ImageSettings.model_validate({"base_credentials": {"provider": "gcp"}})  # its cloud's hosts

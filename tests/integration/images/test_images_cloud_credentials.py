"""Cloud registry credentials against servers that speak each cloud's token protocol.

ACR (Azure Workload Identity) and GCR/Artifact Registry (GKE metadata server)
run against the stand-ins of `cloud_standins.py` in front of a real registry;
ECR runs against moto's ECR API in two regions. No Python-level mock: the
providers make real HTTP calls, the registry validates real tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_standins import ACR_USER, GOOGLE_USER, CloudRegistry, Ledger, MetadataServer

from agent.errors import RegistryError
from agent.images.acr import AcrProvider
from agent.images.auth import EcrProvider, provider_for
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import ImageSettings
from tests.fixtures.harness import Moto

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

PUSH = """
import json, sys
from agent.images.auth import registry_provider
from agent.images.registry import Registry
from agent.images.settings import ImageSettings

MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
host, repository, ca = sys.argv[1:4]
# the login is bound to the generated repository's host (127.0.0.1 stands in for the cloud's)
settings = ImageSettings.model_validate({"ca_bundle": ca, "credentials": {"provider": sys.argv[4]},
                                         "generated_image_repository": f"{host}/{repository}"})
registry = Registry(host, settings, registry_provider(settings, host))
layer = registry.push_blob(repository, b"model bytes")
config = registry.push_blob(repository, b"{}")
manifest = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
               "size": 2},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                "size": 11}]}).encode()
print(registry.put_manifest(repository, "v1", manifest, MEDIA_TYPE))
"""


@pytest.fixture
def tls_dir(harness_env: dict[str, str]) -> Path:
    return Path(harness_env["HARNESS_DIR"]) / "tls"


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def cloud(tmp_path: Path, tls_dir: Path, ledger: Ledger) -> Iterator[CloudRegistry]:
    registry = CloudRegistry(tmp_path, tls_dir, ledger)
    try:
        yield registry
    finally:
        registry.close()


def _push(host: str, repository: str, ca: Path, provider: str,
          env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A push from a fresh process: the agent's provider reads its environment at start."""
    return subprocess.run([sys.executable, "-c", PUSH, host, repository, str(ca), provider],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _verify_pushed(cloud: CloudRegistry, repository: str, digest: str, ca: Path,
                   user: str, password: str) -> None:
    """Read the manifest back with the same kind of credential (skopeo, independent)."""
    settings = ImageSettings.model_validate({"ca_bundle": str(ca)})
    from agent.images.auth import BasicProvider

    registry = Registry(cloud.host, settings, BasicProvider(user, password))
    manifest = registry.get_manifest(repository, "v1")
    assert manifest is not None and sha256_digest(manifest.raw) == digest


def _workload_identity_env(tmp_path: Path, cloud: CloudRegistry, ledger: Ledger,
                           ca: Path) -> dict[str, str]:
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(ledger.federated_token)
    return {**os.environ, "AZURE_CLIENT_ID": ledger.client_id,
            "AZURE_TENANT_ID": ledger.tenant, "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": f"https://{cloud.host}/", "REQUESTS_CA_BUNDLE": str(ca)}


def test_acr_push_with_workload_identity_exchanges_aad_for_acr_tokens(
    cloud: CloudRegistry, ledger: Ledger, tls_dir: Path, tmp_path: Path
) -> None:
    env = _workload_identity_env(tmp_path, cloud, ledger, tls_dir / "ca.crt")
    proc = _push(cloud.host, "models/fraud", tls_dir / "ca.crt", "acr", env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digest = proc.stdout.strip().splitlines()[-1]
    # the three steps, in order: Entra ID, the exchange, then the registry's token endpoint
    assert ledger.calls[:3] == [f"/{ledger.tenant}/oauth2/v2.0/token", "/oauth2/exchange",
                                "/oauth2/token"]
    assert len(ledger.refresh_tokens) == 1
    _verify_pushed(cloud, "models/fraud", digest, tls_dir / "ca.crt", ACR_USER,
                   next(iter(ledger.refresh_tokens)))
    assert ledger.federated_token not in proc.stdout + proc.stderr


def test_acr_refuses_a_token_file_no_federated_identity_matches(
    cloud: CloudRegistry, ledger: Ledger, tls_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _workload_identity_env(tmp_path, cloud, ledger, tls_dir / "ca.crt")
    Path(env["AZURE_FEDERATED_TOKEN_FILE"]).write_text("another-service-account")
    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_AUTHORITY_HOST", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(key, env[key])
    with pytest.raises(RegistryError, match=r"Entra ID refused .*401.*invalid_client"):
        AcrProvider().get(cloud.host)
    assert ledger.calls == [f"/{ledger.tenant}/oauth2/v2.0/token"]  # no exchange attempted


def test_acr_without_workload_identity_says_what_to_configure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RegistryError, match=r"azure\.workload\.identity/use=true"):
        AcrProvider().get("myregistry.azurecr.io")


def test_gcr_push_with_a_token_from_the_metadata_server(
    cloud: CloudRegistry, ledger: Ledger, tls_dir: Path, tmp_path: Path
) -> None:
    metadata = MetadataServer(ledger)
    try:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
        env.update(GCE_METADATA_HOST=metadata.host, GCE_METADATA_IP=metadata.host,
                   HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
        proc = _push(cloud.host, "my-project/models/fraud", tls_dir / "ca.crt", "gcp", env)
    finally:
        metadata.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    digest = proc.stdout.strip().splitlines()[-1]
    token_calls = [c for c in ledger.calls if c.endswith("/token")]
    assert token_calls[0].startswith("/computeMetadata/v1/instance/service-accounts/")
    assert "/oauth2/token" in token_calls
    _verify_pushed(cloud, "my-project/models/fraud", digest, tls_dir / "ca.crt", GOOGLE_USER,
                   next(iter(ledger.google_tokens)))


def test_ecr_region_comes_from_the_registry_host_not_the_default(moto: Moto) -> None:
    account = "123456789012"
    provider = EcrProvider(region="us-east-1", endpoint_url=moto.endpoint,
                           create_repositories=True)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        for region in ("eu-west-1", "ap-southeast-2"):
            host = f"{account}.dkr.ecr.{region}.amazonaws.com"
            provider.ensure_repository(host, f"models/in-{region}")
            assert provider.get(host) is not None
        names = {region: {r["repositoryName"] for r in
                          moto.client("ecr", region_name=region)
                          .describe_repositories()["repositories"]}
                 for region in ("eu-west-1", "ap-southeast-2", "us-east-1")}
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert "models/in-eu-west-1" in names["eu-west-1"]
    assert "models/in-ap-southeast-2" in names["ap-southeast-2"]
    assert not {"models/in-eu-west-1", "models/in-ap-southeast-2"} & names["us-east-1"]
    assert set(provider._clients) == {"eu-west-1", "ap-southeast-2"}


def test_auto_picks_workload_identity_for_acr_only_without_a_docker_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = ImageSettings.model_validate({})
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    assert provider_for(settings.credentials, "myregistry.azurecr.io").name == "anonymous"
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "token"))
    assert provider_for(settings.credentials, "myregistry.azurecr.io").name == "acr"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {}}))
    with_secret = ImageSettings.model_validate({"credentials": {
        "docker_config_file": str(config)}})
    assert provider_for(with_secret.credentials, "myregistry.azurecr.io").name == "dockerconfig"

"""S3 client construction: endpoint precedence, path-style addressing, region, CA bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.artifacts import ArtifactSettings
from agent.artifacts.credentials import parse_credentials
from agent.artifacts.s3 import make_client


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_secret_endpoint_wins_and_uses_path_style() -> None:
    creds = parse_credentials({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                               "AWS_ENDPOINT_URL": "http://secret-store:9000"}).s3
    client = make_client(ArtifactSettings(s3_endpoint_url="http://settings:1"), creds)
    assert client.meta.endpoint_url == "http://secret-store:9000"
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.region_name == "us-east-1"


def test_settings_then_env_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(ArtifactSettings(s3_endpoint_url="http://settings:1"), None)
    assert client.meta.endpoint_url == "http://settings:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:2")
    client = make_client(ArtifactSettings(), None)
    assert client.meta.endpoint_url == "http://env:2"
    assert client.meta.config.s3["addressing_style"] == "path"


def test_aws_default_is_virtual_and_region_from_secret() -> None:
    creds = parse_credentials({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                               "AWS_DEFAULT_REGION": "eu-west-3"}).s3
    client = make_client(ArtifactSettings(), creds)
    assert client.meta.region_name == "eu-west-3"
    assert client.meta.config.s3["addressing_style"] == "auto"
    assert "amazonaws.com" in client.meta.endpoint_url


def test_ca_bundle_is_added_to_the_default_roots(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nPRIVATE-CA\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    client = make_client(ArtifactSettings(ca_bundle=ca, s3_endpoint_url="https://s:1"), None)
    bundle = Path(client._endpoint.http_session._verify).read_text()
    assert "PRIVATE-CA" in bundle  # the configured CA...
    assert Path(certifi.where()).read_text().strip()[:2000] in bundle  # ...plus the public roots
    no_verify = parse_credentials({"awsAccessKeyID": "a", "awsSecretAccessKey": "b"},
                                  {"serving.kserve.io/s3-verifyssl": "0"}).s3
    client = make_client(ArtifactSettings(ca_bundle=ca), no_verify)
    assert client._endpoint.http_session._verify is False

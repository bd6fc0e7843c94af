"""The pure parts of the artifact security policy: credential bindings, the egress
policy's address classification, URI redaction and which secret values are scrubbed."""

from __future__ import annotations

import pytest

from agent.artifacts.credentials import Binding, credential_values, parse_credentials
from agent.artifacts.egress import EgressPolicy
from agent.artifacts.settings import DEFAULT_BLOCKED_NETWORKS, ArtifactSettings
from agent.errors import ArtifactError
from agent.logs import redact_uri


@pytest.mark.parametrize(("binding", "scheme", "host", "port", "allowed"), [
    ("models.example.com", "https", "models.example.com", None, True),
    ("models.example.com", "http", "MODELS.example.com.", 8080, True),  # any port, any case
    ("models.example.com:8443", "https", "models.example.com", None, False),  # 443 != 8443
    ("models.example.com:8443", "https", "models.example.com", 8443, True),
    ("https://models.example.com", "http", "models.example.com", None, False),
    ("https://models.example.com/path", "https", "models.example.com", 443, True),
    ("a.example.com, b.example.com", "https", "b.example.com", None, True),
    ("[::1]:9000", "http", "::1", 9000, True),
    ("models.example.com", "https", "evil.example.com", None, False),
    ("", "https", "models.example.com", None, False),
])
def test_binding(binding: str, scheme: str, host: str, port: int | None, allowed: bool) -> None:
    assert Binding.parse(binding).allows(scheme, host, port) is allowed


def test_binding_rejects_garbage() -> None:
    with pytest.raises(ArtifactError, match="bad port"):
        Binding.parse("host:http")


def test_registry_login_binding() -> None:
    creds = parse_credentials({"username": "u", "password": "p", "host": "r.example.com:5000"})
    assert creds.oci is not None
    assert creds.oci.for_registry("r.example.com:5000") == ("u", "p")
    with pytest.raises(ArtifactError, match=r"bound to r\.example\.com:5000, not evil:5000"):
        creds.oci.for_registry("evil:5000")
    docker = parse_credentials({".dockerconfigjson": '{"auths": {"r.io": {"username": "a", '
                                                     '"password": "b"}}}'}).oci
    assert docker is not None
    assert docker.for_registry("r.io") == ("a", "b") and docker.for_registry("other") is None


@pytest.mark.parametrize(("address", "blocked"), [
    ("169.254.169.254", "169.254.0.0/16"), ("::ffff:169.254.169.254", "169.254.0.0/16"),
    ("fd00:ec2::254", "fd00:ec2::254/128"), ("fe80::1%eth0", "fe80::/10"),
    ("100.100.100.200", "100.100.100.200/32"), ("0.0.0.0", "0.0.0.0/8"),
    ("127.0.0.1", None), ("10.1.2.3", None), ("::1", None), ("8.8.8.8", None),
])
def test_default_egress_policy(address: str, blocked: str | None) -> None:
    net = EgressPolicy(DEFAULT_BLOCKED_NETWORKS).blocking(address)
    assert (str(net) if net else None) == blocked


def test_allowed_networks_win_and_bad_cidrs_are_rejected() -> None:
    policy = EgressPolicy(["169.254.0.0/16"], ["169.254.10.0/24"])
    assert policy.blocking("169.254.10.7") is None
    assert policy.blocking("169.254.169.254") is not None
    with pytest.raises(ValueError, match="not a CIDR"):
        ArtifactSettings(blocked_networks=["169.254.0.0/33"])


@pytest.mark.parametrize(("uri", "shown"), [
    ("https://u:p@h:1/a/b?X-Amz-Signature=s&v=1#frag",
     "https://h:1/a/b?X-Amz-Signature=<redacted>&v=<redacted>"),
    ("s3://bucket/key", "s3://bucket/key"),
    ("models:/name@alias", "models:/name@alias"),
    ("http://[::1/x?sig=abc", "http://[::1/x"),  # unparseable: still no query
    ("", ""),
])
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_uri(redact_uri(uri)) == redact_uri(uri)  # idempotent


def test_credential_values_are_the_secret_fields_only() -> None:
    gcs_key = '{"type": "service_account", "private_key_id": "0123456789abcdef", ' \
              '"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n' \
              '-----END PRIVATE KEY-----\\n", "client_email": "sa@p.iam.gserviceaccount.com"}'
    values = credential_values({
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "rclone-secret-1", "RCLONE_CONFIG_S3_REGION": "r1",
        "Authorization": "Bearer abc.def.ghi", "gcs-key.json": gcs_key,
        "MLFLOW_TRACKING_USERNAME": "alice", "username": "bob",
    })
    assert "rclone-secret-1" in values and "abc.def.ghi" in values
    assert "0123456789abcdef" in values and "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" in values
    assert not {"r1", "alice", "bob", "sa@p.iam.gserviceaccount.com"} & set(values)

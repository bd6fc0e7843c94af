"""Secrets in model URIs (signed URLs, user info) and in credentials Secrets never reach
an error, a log line or the fetch-model command's output; only credential fields are
scrubbed, so logs stay readable."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.artifacts.credentials import credential_values, register_credentials
from agent.errors import ArtifactError
from agent.logs import TextFormatter, _ContextFilter, redact_uri, scrub
from tests.security.conftest import Endpoint

SIGNATURE = "a1b2c3d4e5f60718293a4b5c6d7e8f90sig"
SIGNED_QUERIES = [
    f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA/x&X-Amz-Signature={SIGNATURE}",
    f"X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={SIGNATURE}",
    f"sv=2022-11-02&se=2030-01-01&sp=r&sig={SIGNATURE}",
    f"token={SIGNATURE}",
]


@pytest.fixture
def records() -> Iterator[list[str]]:
    """Log lines as the agent's handler formats them (filter + formatter of logs.py)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    old_level, old_urllib3 = root.level, logging.getLogger("urllib3").level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # as configure_logging does
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)
    logging.getLogger("urllib3").setLevel(old_urllib3)


@pytest.mark.parametrize("query", SIGNED_QUERIES)
def test_signed_urls_are_redacted_in_errors_and_logs(query: str, records: list[str],
                                                     endpoint: Callable[[], Endpoint],
                                                     tmp_path: Path) -> None:
    server = endpoint()
    server.routes["/model.bin"] = (403, {}, b"")
    server.routes["/other.bin"] = (200, {}, 1000)  # no length, no validator: logged + hashed
    with pytest.raises(ArtifactError, match="refused access") as err:
        open_model(f"{server.url}/model.bin?{query}", ArtifactSettings(retries=0))
    fetch_model(f"{server.url}/other.bin?{query}", tmp_path / "d", ArtifactSettings())
    assert SIGNATURE not in str(err.value)
    assert "=<redacted>" in str(err.value) and f"{server.url}/model.bin" in str(err.value)
    assert [line for line in records if "hashing the content" in line]
    assert not [line for line in records if SIGNATURE in line]
    assert server.seen[0].path.endswith(SIGNATURE)  # the real request kept the signature


def test_user_info_is_removed(endpoint: Callable[[], Endpoint]) -> None:
    server = endpoint()
    server.routes["/model.bin"] = (404, {}, b"")
    url = server.url.replace("http://", "http://ops:p4ssw0rd-in-url@") + "/model.bin"
    with pytest.raises(ArtifactError, match="not found") as err:
        open_model(url, ArtifactSettings(retries=0))
    assert "p4ssw0rd-in-url" not in str(err.value) and "ops@" not in str(err.value)
    assert redact_uri("oci://u:p@r/m:1") == "oci://r/m:1"
    assert redact_uri("https://h/p?a=1&b") == "https://h/p?a=<redacted>&b=<redacted>"


def test_fetch_model_command_prints_no_signature(endpoint: Callable[[], Endpoint],
                                                 tmp_path: Path) -> None:
    server = endpoint()
    server.routes["/model.bin"] = (403, {}, b"")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model",
         f"{server.url}/model.bin?{SIGNED_QUERIES[0]}", str(tmp_path / "d"),
         "--log-level", "DEBUG", "--set", "artifacts.retries=0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "refused access" in proc.stderr
    assert SIGNATURE not in proc.stdout + proc.stderr


def test_fetch_model_reads_the_uri_from_the_environment_as_the_init_containers_do(
        endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    """The storage initializer and the Kaniko fetch step get the URI from a Secret as an
    environment variable: it is in neither the process arguments nor the output."""
    import os

    server = endpoint()
    server.routes["/model.bin"] = (200, {}, b"weights")
    signed = f"{server.url}/model.bin?{SIGNED_QUERIES[0]}"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model", "--uri-from-env", "MODEL_URI",
         str(tmp_path / "d"), "--set", "artifacts.retries=0"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MODEL_URI": signed},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "model.bin").read_bytes() == b"weights"
    assert SIGNATURE not in proc.stdout + proc.stderr
    empty = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model", "--uri-from-env", "MODEL_URI",
         str(tmp_path / "e")], capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MODEL_URI"})
    assert empty.returncode == 2 and "MODEL_URI: the variable is empty or unset" in empty.stderr


SECRET = {
    "AWS_ACCESS_KEY_ID": "AKIACANARY0000000001",
    "AWS_SECRET_ACCESS_KEY": "canary/secret+access+key/0001",
    "AWS_DEFAULT_REGION": "eu-central-1",
    "AWS_ENDPOINT_URL": "http://minio.storage:9000",
    "USE_SSL": "true",
    "token": "canary-bearer-token-0002",
    "host": "models.example.com",
    ".dockerconfigjson":
        '{"auths": {"r.example.com": {"auth": "dXNlcjpjYW5hcnktcmVnaXN0cnktMDAwMw=="}}}',
    "MLFLOW_TRACKING_PASSWORD": "short",
}


def test_only_credential_fields_are_scrubbed() -> None:
    values = credential_values(SECRET)
    assert "canary/secret+access+key/0001" in values
    assert "canary-registry-0003" in values  # decoded from the docker config's auth
    assert not {"eu-central-1", "http://minio.storage:9000", "true", "models.example.com"} & set(
        values)
    register_credentials(SECRET)
    line = ("region eu-central-1 endpoint http://minio.storage:9000 ssl true short "
            "key canary/secret+access+key/0001 token canary-bearer-token-0002 "
            "registry canary-registry-0003")
    assert scrub(line) == ("region eu-central-1 endpoint http://minio.storage:9000 ssl true "
                           "short key *** token *** registry ***")


def test_credentials_dir_secrets_are_scrubbed_by_fetch_model(endpoint: Callable[[], Endpoint],
                                                             tmp_path: Path) -> None:
    """The secret itself shows up in the URI path: the command's output must hide it."""
    server = endpoint()
    token = "canary-mounted-token-0004"
    creds = tmp_path / "secret"
    creds.mkdir()
    (creds / "token").write_text(token)
    (creds / "host").write_text(server.host)
    server.routes[f"/{token}/missing"] = (404, {}, b"")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model", f"{server.url}/{token}/missing",
         str(tmp_path / "d"), "--credentials-dir", str(creds), "--set", "artifacts.retries=0"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and f"{server.url}/***/missing: not found" in proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert server.authorizations() == [f"Bearer {token}"]  # it was used, bound to its host

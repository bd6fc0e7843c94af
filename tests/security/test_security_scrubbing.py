"""The agent's own secrets are scrubbed from every log line, rotated values included (item 10).

The registry password and the MLflow token of the control-plane adapter used to reach logs
unscrubbed: a library logging a request, an error quoting a URL with user info. The MLflow
server here is a recording HTTP server on 127.0.0.1 (conftest.py): what matters is that
the token the adapter really sent is the one scrubbed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.config import MLflowSettings, Settings
from agent.controlplane.mlflow import MLflowRegistry
from agent.daemon import configured_secrets
from agent.images.auth import BasicProvider
from agent.logs import register_secret, scrub
from tests.security.conftest import Endpoint


def test_configured_secrets_are_all_registered_at_start(tmp_path: Path) -> None:
    (tmp_path / "registry-pw").write_text("canary-registry-pw-0101\n")
    (tmp_path / "mlflow-token").write_text("canary-mlflow-token-0102\n")
    (tmp_path / "netrc").write_text(
        "machine pypi.corp.example login ci password canary-index-pw-0105\n")
    settings = Settings.model_validate({
        "control_plane": {"token": "canary-cp-token-0100", "mlflow": {
            "token_file": str(tmp_path / "mlflow-token"), "password": "canary-mlflow-pw-0103"}},
        "images": {"credentials": {"username": "ops",
                                   "password_file": str(tmp_path / "registry-pw")},
                   "base_credentials": {"username": "b", "password": "canary-base-pw-0104",
                                        "hosts": ["base.example.com"]},
                   "dependencies": {"index_credentials_file": str(tmp_path / "netrc")}}})
    for secret in configured_secrets(settings):
        register_secret(secret)
    line = " ".join(f"canary-{name}" for name in (
        "cp-token-0100", "registry-pw-0101", "mlflow-token-0102", "mlflow-pw-0103",
        "base-pw-0104", "index-pw-0105"))
    assert scrub(line) == "*** *** *** *** *** ***"


def test_rotated_registry_password_is_scrubbed_on_use(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("canary-rotated-pw-0201")
    provider = BasicProvider("ops", password_file=path)
    provider.get("registry.example.com")
    path.write_text("canary-rotated-pw-0202")  # kubelet updated the mounted Secret
    assert provider.get("registry.example.com").password == "canary-rotated-pw-0202"
    assert scrub("canary-rotated-pw-0201 canary-rotated-pw-0202") == "*** ***"


def test_mlflow_token_sent_is_scrubbed(endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    server = endpoint()
    server.body = b'{"registered_models": []}'
    token_file = tmp_path / "token"
    token_file.write_text("canary-mlflow-rotating-0301")
    registry = MLflowRegistry(MLflowSettings(tracking_uri=server.url, token_file=token_file),
                              timeout=5)
    registry.call("GET", "registered-models/search")
    token_file.write_text("canary-mlflow-rotating-0302")
    registry.call("GET", "registered-models/search")
    assert server.authorizations() == ["Bearer canary-mlflow-rotating-0301",
                                       "Bearer canary-mlflow-rotating-0302"]
    assert scrub("canary-mlflow-rotating-0301 canary-mlflow-rotating-0302") == "*** ***"

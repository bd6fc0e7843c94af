"""MLflow alias -> prediction URL on the harness cluster.

A model is uploaded to the harness S3 and registered in the real MLflow
server; setting `@production` makes the agent (control_plane.kind=mlflow,
plugin kubernetes) build the model image, run it on the Kubernetes API
stand-in and write state and URL back as tags on the model version; moving
the alias replaces the model; deleting it stops the deployment.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from agent.controlplane.mlflow import deployment_id_for
from tests.e2e.test_e2e_kubernetes import SERVER, Agent, agent_config, predict
from tests.fixtures.harness import Mlflow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def api(mlflow: Mlflow, method: str, path: str, **body: Any) -> dict[str, Any]:
    url = f"{mlflow.uri}/api/2.0/mlflow/{path}"
    response = (requests.get(url, params=body, timeout=10) if method == "GET"
                else requests.request(method, url, json=body, timeout=10))
    response.raise_for_status()
    return dict(response.json())


def upload_version(mlflow: Mlflow, name: str, answer: float) -> str:
    """Put a model in S3 and register it as a new version; returns the version."""
    prefix = f"{name}/{secrets.token_hex(4)}"
    s3 = mlflow.s3.client()
    s3.put_object(Bucket=mlflow.artifact_bucket, Key=f"{prefix}/server.py", Body=SERVER.encode())
    s3.put_object(Bucket=mlflow.artifact_bucket, Key=f"{prefix}/model.json",
                  Body=f'{{"name": "{name}-{answer}", "answer": {answer}}}'.encode())
    created = api(mlflow, "POST", "model-versions/create", name=name,
                  source=f"s3://{mlflow.artifact_bucket}/{prefix}")
    return str(created["model_version"]["version"])


def version_tags(mlflow: Mlflow, name: str, version: str) -> dict[str, str]:
    data = api(mlflow, "GET", "model-versions/get", name=name, version=version)
    return {t["key"]: t["value"] for t in data["model_version"].get("tags", [])}


def wait_for_tag(mlflow: Mlflow, name: str, version: str, state: str,
                 agent: Agent, timeout: float = 420) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    tags: dict[str, str] = {}
    while time.monotonic() < deadline:
        tags = version_tags(mlflow, name, version)
        if tags.get("management-agent.state") == state:
            return tags
        if tags.get("management-agent.status") == "failing":
            break
        time.sleep(1)
    raise AssertionError(f"version {version} tags: {tags}\n----- agent log -----\n{agent.log()}")


def test_alias_promotion_deploys_replaces_and_stops(cluster: dict[str, str], mlflow: Mlflow,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"e2e-{secrets.token_hex(3)}"
    api(mlflow, "POST", "registered-models/create", name=name,
        tags=[{"key": "deploy", "value": "true"}])
    v1 = upload_version(mlflow, name, 2.0)
    api(mlflow, "POST", "registered-models/alias", name=name, alias="production", version=v1)

    config_path = agent_config(tmp_path / "agent.yaml", cluster, "http://unused", "mlflow", "-")
    config = yaml.safe_load(config_path.read_text())
    config["control_plane"] = {"kind": "mlflow", "environment_id": "mlflow-e2e",
                               "poll_interval_seconds": 1,
                               "mlflow": {"tracking_uri": mlflow.uri, "name_pattern": name}}
    config["artifacts"] = {"s3_endpoint_url": mlflow.s3.endpoint}
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", mlflow.s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", mlflow.s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", mlflow.s3.region)
    agent = Agent(config_path, tmp_path / "agent.log")
    try:
        tags = wait_for_tag(mlflow, name, v1, "ready", agent)
        deployment_id = deployment_id_for(name, "production")
        url = tags["management-agent.url"]
        assert url == f"{cluster['HARNESS_INGRESS_URL'].rstrip('/')}/{deployment_id}/predict"
        assert predict(url)["predictions"] == [12.0]

        v2 = upload_version(mlflow, name, 10.0)
        api(mlflow, "POST", "registered-models/alias", name=name, alias="production",
            version=v2)
        wait_for_tag(mlflow, name, v2, "ready", agent)
        assert predict(url)["predictions"] == [60.0]

        api(mlflow, "DELETE", "registered-models/alias", name=name, alias="production")
        wait_for_tag(mlflow, name, v2, "stopped", agent)
    finally:
        agent.stop()

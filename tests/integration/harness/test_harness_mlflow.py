"""MLflow's REST API, with artifacts proxied into the SeaweedFS bucket."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.fixtures.harness import Mlflow

pytestmark = pytest.mark.integration


def test_mlflow_registered_model_rest(mlflow: Mlflow) -> None:
    name = f"harness-{uuid.uuid4().hex[:10]}"
    api = f"{mlflow.uri}/api/2.0/mlflow"
    created = requests.post(f"{api}/registered-models/create", json={"name": name}, timeout=30)
    assert created.status_code == 200, created.text
    got = requests.get(f"{api}/registered-models/get", params={"name": name}, timeout=30)
    assert got.json()["registered_model"]["name"] == name
    duplicate = requests.post(f"{api}/registered-models/create", json={"name": name}, timeout=30)
    assert duplicate.status_code == 400
    assert duplicate.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


def test_mlflow_artifacts_land_in_s3(mlflow: Mlflow) -> None:
    path = f"harness-test/{uuid.uuid4().hex}/model.txt"
    url = f"{mlflow.uri}/api/2.0/mlflow-artifacts/artifacts/{path}"
    assert requests.put(url, data=b"model bytes", timeout=30).status_code == 200
    assert requests.get(url, timeout=30).content == b"model bytes"
    stored = mlflow.s3.client().get_object(Bucket=mlflow.artifact_bucket, Key=path)
    assert stored["Body"].read() == b"model bytes"

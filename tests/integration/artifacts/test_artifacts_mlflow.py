"""models:/ against a real MLflow tracking server (harness, or started locally) with
the artifact proxy: MLflow 3 logged models (`models:/m-<id>` sources), aliases, versions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError
from tests.fixtures.mlflow_models import mlflow_api, register_model

pytestmark = pytest.mark.integration

FILES = {"MLmodel": b"flavors:\n  python_function: {}\n", "model.pkl": b"\x80pickle" * 500,
         "code/util.py": b"x = 1\n"}


def _register(base: str, files: dict[str, bytes]) -> tuple[str, str]:
    """A registered model holding `files`, version 1 aliased `champion`."""
    name, model_id = register_model(base, files, "art")
    mlflow_api(base, "registered-models/alias", {"name": name, "alias": "champion", "version": "1"})
    return name, model_id


def test_alias_version_and_logged_model(mlflow_server: str, tmp_path: Path) -> None:
    name, model_id = _register(mlflow_server, FILES)
    settings = ArtifactSettings(mlflow_tracking_uri=mlflow_server)
    with open_model(f"models:/{name}@champion", settings) as src:
        digest = src.digest
        assert [f.path for f in src.files()] == ["MLmodel", "code/util.py", "model.pkl"]
    dest = tmp_path / "model"
    assert fetch_model(f"models:/{name}@champion", dest, settings) == digest
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    with open_model(f"models:/{name}/1", settings) as src:
        assert src.digest == digest
    with open_model(f"models:/{model_id}", settings) as src:
        assert src.digest == digest
    with open_model(f"models:/{name}/latest", settings) as src:
        assert src.digest == digest


def test_env_tracking_uri_and_errors(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name, _ = _register(mlflow_server, {"MLmodel": b"x"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    with open_model(f"models:/{name}@champion", ArtifactSettings()) as src:
        assert [f.path for f in src.files()] == ["MLmodel"]
    with pytest.raises(ArtifactError, match=rf"models:/{name}@nope.*not found"):
        open_model(f"models:/{name}@nope", ArtifactSettings())
    with pytest.raises(ArtifactError, match="not found"):
        open_model("models:/no-such-model-art/3", ArtifactSettings())
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ArtifactError, match="no MLflow tracking server"):
        open_model(f"models:/{name}@champion", ArtifactSettings())
    with pytest.raises(ArtifactError, match="expected models"):
        open_model("models:/justaname", ArtifactSettings(mlflow_tracking_uri=mlflow_server))


def test_version_stored_in_s3_is_read_directly(mlflow_server: str,
                                               seaweed_bucket: dict[str, Any],
                                               tmp_path: Path) -> None:
    """A version whose source is s3://: files come from the store (its ETags make the digest)."""
    store, bucket = seaweed_bucket, seaweed_bucket["bucket"]
    prefix = f"t-{uuid.uuid4().hex[:8]}/direct/model"
    for name, data in FILES.items():
        store["client"].put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    name = f"art-direct-{uuid.uuid4().hex[:8]}"
    mlflow_api(mlflow_server, "registered-models/create", {"name": name})
    mlflow_api(mlflow_server, "model-versions/create",
         {"name": name, "source": f"s3://{bucket}/{prefix}"})
    creds = {"AWS_ACCESS_KEY_ID": store["key"], "AWS_SECRET_ACCESS_KEY": store["secret"],
             "AWS_ENDPOINT_URL": store["endpoint"]}
    settings = ArtifactSettings(mlflow_tracking_uri=mlflow_server)
    digest = fetch_model(f"models:/{name}/1", tmp_path / "d", settings, creds)
    with open_model(f"s3://{bucket}/{prefix}", settings, creds) as src:
        assert src.digest == digest
    assert (tmp_path / "d" / "model.pkl").read_bytes() == FILES["model.pkl"]
    with pytest.raises(ArtifactError, match=rf"models:/{name}/1 .*s3://{bucket}"):
        open_model(f"models:/{name}/1", settings,
                   dict(creds, AWS_SECRET_ACCESS_KEY="wrong-one-123"))

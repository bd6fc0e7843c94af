"""A deployment asks the agent to "fetch" its own files (the service-account token).

A canary file stands for the token: the agent must refuse file:// unless ops listed
a directory in artifacts.file_roots, and a path (or a link) leading outside it.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError

CANARY = "canary-sa-token-0c9b8a7f6e5d"


@pytest.fixture
def token(tmp_path: Path) -> Path:
    secrets = tmp_path / "var" / "run" / "secrets" / "serviceaccount"
    secrets.mkdir(parents=True)
    (secrets / "token").write_text(CANARY)
    return secrets / "token"


def test_file_uri_is_refused_by_default(token: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="file:// model URIs are disabled") as err:
        fetch_model(token.as_uri(), tmp_path / "out", ArtifactSettings())
    assert "artifacts.file_roots" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_paths_and_links_outside_the_roots_are_refused(token: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "iris").mkdir(parents=True)
    (models / "iris" / "model.pkl").write_bytes(b"weights")
    (models / "iris" / "token").symlink_to(token)  # a link inside the tree, target outside
    (models / "escape").symlink_to(token.parent)  # a directory link out of the root
    settings = ArtifactSettings(file_roots=[models])
    for uri in (token.as_uri(), f"file://{models}/../var/run/secrets/serviceaccount/token",
                f"file://{models}/escape/token", f"file://{models}/escape"):
        with pytest.raises(ArtifactError, match=r"outside artifacts\.file_roots"):
            open_model(uri, settings)
    with open_model((models / "iris").as_uri(), settings) as src:  # allowed, link skipped
        assert [f.path for f in src.files()] == ["model.pkl"]


def test_fetch_model_command_refuses_too(token: Path, tmp_path: Path) -> None:
    """The storage initializer runs the same code: the token never reaches the model dir."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "fetch-model", token.as_uri(), str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1 and "file:// model URIs are disabled" in proc.stderr
    assert CANARY not in proc.stdout + proc.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.integration
def test_mlflow_version_resolving_to_a_local_path_is_refused(mlflow: Any, token: Path,
                                                             tmp_path: Path) -> None:
    """An MLflow tagger points an experiment's artifact location at the agent's disk (the
    real MLflow server accepts file:// locations) and registers a version under it.

    MLflow keeps a version's source inside its run's directory (random id), so the test
    puts the agent's secret there itself: what matters is that the agent never reads
    its own disk for a models:/ URI unless ops allowed that directory."""
    base = mlflow.uri

    def api(path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(f"{base}/api/2.0/mlflow/{path}", json=body, timeout=30)
        resp.raise_for_status()
        return dict(resp.json())

    where = token.parent
    exp = api("experiments/create", {"name": f"steal-{uuid.uuid4().hex[:8]}",
                                     "artifact_location": where.as_uri()})["experiment_id"]
    run = api("runs/create", {"experiment_id": exp})["run"]["info"]
    artifacts = Path(run["artifact_uri"].removeprefix("file://"))
    artifacts.mkdir(parents=True)
    (artifacts / "token").write_text(token.read_text())
    name = f"steal-{uuid.uuid4().hex[:8]}"
    api("registered-models/create", {"name": name})
    api("model-versions/create", {"name": name, "source": run["artifact_uri"],
                                  "run_id": run["run_id"]})
    settings = ArtifactSettings(mlflow_tracking_uri=base, retries=0)
    with pytest.raises(ArtifactError, match="file:// model URIs are disabled") as err:
        fetch_model(f"models:/{name}/1", tmp_path / "out", settings)
    assert f"models:/{name}/1" in str(err.value) and CANARY not in str(err.value)
    elsewhere = settings.model_copy(update={"file_roots": [tmp_path / "models"]})
    with pytest.raises(ArtifactError, match=r"outside artifacts\.file_roots"):
        fetch_model(f"models:/{name}/1", tmp_path / "out", elsewhere)
    assert not (tmp_path / "out").exists()

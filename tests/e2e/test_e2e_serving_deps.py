"""An MLflow model whose requirements the server image lacks, served by the direct builder.

The model is MLflow "models from code": a pyfunc whose predict needs jmespath (pure
Python) and MarkupSafe (a compiled cp311 wheel), neither of which the harness build of
MLflow's scoring server has. Its requirements.txt names them; the direct builder installs
them for the image's Python into a dependency layer, and the real server answers as the
model does locally. A second model with the same requirements reuses that layer (no
install, the same layer digest in both images); an unsatisfiable requirement fails the
action with pip's reason before anything is applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_e2e_kubernetes import Agent
from tests.e2e.test_e2e_serving import (
    ask_mlflow,
    finish,
    iris,
    rows,
    serving_agent,
    upload,
)
from tests.fixtures.harness import S3

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
__all__ = ["serving_agent"]  # the fixture, used by name

CODE = '''\
import jmespath
import markupsafe
import mlflow
import numpy as np


class Tagged(mlflow.pyfunc.PythonModel):
    """The classifier's label as the length of an escaped marker: needs both packages."""

    def load_context(self, context):
        import joblib

        self.classifier = joblib.load(context.artifacts["classifier"])

    def predict(self, context, model_input, params=None):
        labels = self.classifier.predict(np.asarray(model_input, dtype=float))
        records = [{"tag": str(markupsafe.escape("<" * int(label)))} for label in labels]
        return [len(tag) for tag in jmespath.search("[*].tag", records)]


mlflow.models.set_model(Tagged())
'''


def save_tagged(classifier: Any, directory: Path, requirements: list[str]) -> Path:
    import joblib
    import mlflow.pyfunc

    work = directory.with_name(directory.name + "-src")
    work.mkdir()
    (work / "tagged.py").write_text(CODE)
    joblib.dump(classifier, work / "classifier.joblib")
    mlflow.pyfunc.save_model(str(directory), python_model=str(work / "tagged.py"),
                             artifacts={"classifier": str(work / "classifier.joblib")},
                             pip_requirements=requirements)
    return directory


def local_answers(directory: Path) -> list[int]:
    import mlflow.pyfunc
    import numpy as np

    return [int(x) for x in mlflow.pyfunc.load_model(str(directory)).predict(
        np.asarray(rows()))]


def classifier(kind: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    features, target = iris()
    model = (LogisticRegression(max_iter=500) if kind == "v1"
             else DecisionTreeClassifier(max_depth=1, random_state=0))
    return model.fit(features, target)


def deps_layer(cluster: dict[str, str], image: str) -> dict[str, Any]:
    """The layer of `image` before the model layer (read from the harness registry)."""
    registry, _, rest = image.partition("/")
    repository, _, tag = rest.rpartition(":")
    response = requests.get(f"http://{registry}/v2/{repository}/manifests/{tag}", timeout=30,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                                     "application/vnd.docker.distribution.manifest.v2+json"})
    response.raise_for_status()
    return dict(json.loads(response.content)["layers"][-2])


def test_model_with_requirements_the_server_lacks_is_served_with_a_shared_layer(
        control_plane: Any, serving_agent: tuple[str, Agent], cluster: dict[str, str],
        s3: S3, tmp_path: Path) -> None:
    from importlib.metadata import version

    env_id, agent = serving_agent
    # the versions the local answers come from; the server image has neither package
    requirements = [f"mlflow=={version('mlflow-skinny')}", "scikit-learn", "numpy",
                    f"jmespath=={version('jmespath')}", f"markupsafe=={version('markupsafe')}"]
    one = save_tagged(classifier("v1"), tmp_path / "one", requirements)
    assert "jmespath==" in (one / "requirements.txt").read_text()
    expected = local_answers(one)
    assert set(expected) <= {0, 4, 8} and len(set(expected)) > 1, expected

    result = finish(control_plane, env_id, control_plane.deploy(
        env_id, "tagged-one", "tagged-v1", uri=upload(s3, one),
        server_profile="mlflow-pyfunc"), agent)
    assert result["state"] == "ready", (result, agent.log()[-4000:])
    assert ask_mlflow(result["data"]["predictionUrl"], rows()) == expected
    # installed now, or found from an earlier run against this harness registry
    assert "installing jmespath==" in agent.log() or "dependency layer reused" in agent.log()

    # a second model, the same requirements: the layer is found, not installed again
    two = save_tagged(classifier("v2"), tmp_path / "two", requirements)
    expected_two = local_answers(two)
    assert expected_two != expected
    installs = agent.log().count("installing jmespath==")
    result_two = finish(control_plane, env_id, control_plane.deploy(
        env_id, "tagged-two", "tagged-v2", uri=upload(s3, two),
        server_profile="mlflow-pyfunc"), agent)
    assert result_two["state"] == "ready", (result_two, agent.log()[-4000:])
    assert ask_mlflow(result_two["data"]["predictionUrl"], rows()) == expected_two
    assert agent.log().count("installing jmespath==") == installs
    assert agent.log().count("dependency layer reused") == 1 + (installs == 0)
    images = [result["data"]["image"], result_two["data"]["image"]]
    assert images[0] != images[1]
    assert deps_layer(cluster, images[0]) == deps_layer(cluster, images[1])

    # a requirement no index has: the action fails with pip's words, nothing is applied
    bad = save_tagged(classifier("v1"), tmp_path / "bad",
                      [*requirements, "management-agent-no-such-package-zz==1.0"])
    result_bad = finish(control_plane, env_id, control_plane.deploy(
        env_id, "tagged-bad", "tagged-bad", uri=upload(s3, bad),
        server_profile="mlflow-pyfunc"), agent)
    assert result_bad["status"] == "failing", result_bad
    message = result_bad["data"]["message"]
    assert "No matching distribution found for management-agent-no-such-package-zz==1.0" \
        in message, message

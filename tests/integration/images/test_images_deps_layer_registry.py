"""Dependency layers on the real MLflow server image: pip for the image's Python, built once.

The base is the harness build of MLflow's scoring server (Debian bookworm, CPython 3.11,
mlflow-skinny, scikit-learn, pandas). The model's requirements.txt names two packages the
image lacks: jmespath (pure Python) and MarkupSafe (a compiled cp311 manylinux wheel),
plus packages the image has. PyPI must be reachable (it is from the harness machines).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from images_support import Registries

from agent.config import Settings
from agent.errors import InvalidActionError
from agent.images import build_model_image
from agent.images.layer import DirectorySource
from agent.model import DeploymentSpec, ModelRef
from tests.fixtures.harness import harness_down, harness_vars

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
REQUIREMENTS = "jmespath==1.1.0\nMarkupSafe==3.0.2\nmlflow==3.17.2\nnumpy\npandas>=99\n"


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, message: str, level: str = "info", **details: Any) -> None:
        self.items.append((message, details))

    def find(self, text: str) -> tuple[str, dict[str, Any]]:
        found = [item for item in self.items if text in item[0]]
        assert found, [m for m, _ in self.items]
        return found[-1]


@pytest.fixture(scope="module")
def mlflow_image(registries: Registries) -> str:
    image = harness_vars().get("HARNESS_MLFLOW_SERVER_IMAGE")
    if not image:
        harness_down("the MLflow server image (HARNESS_MLFLOW_SERVER_IMAGE)")
    assert image.startswith(registries.plain + "/"), image
    return image


def _settings(reg: Registries) -> Settings:
    return Settings.model_validate({"images": {
        "generated_image_repository": f"{reg.plain}/models/deps-{RUN}",
        "insecure_registries": [reg.plain]}})


def _model(directory: Path, content: str, requirements: str) -> DirectorySource:
    directory.mkdir()
    (directory / "MLmodel").write_text(f"# {content}\n")
    (directory / "weights.bin").write_bytes(content.encode() * 1000)
    (directory / "requirements.txt").write_text(requirements)
    return DirectorySource(directory)


def _build(reg: Registries, image: str, source: DirectorySource, model: str,
           events: Events) -> Any:
    spec = DeploymentSpec(id=model, model=ModelRef(id=model, uri="file:///unused"))
    return build_model_image(spec, image, "/mnt/models", _settings(reg), events, source=source)


def _get(reg: Registries, reference: str, what: str, accept: str = "") -> bytes:
    repository, _, tag = reference.split("/", 1)[1].rpartition(":")
    response = requests.get(f"http://{reg.plain}/v2/{repository}/{what}".format(tag=tag),
                            headers={"Accept": accept}, timeout=30)
    response.raise_for_status()
    return response.content


def _image(reg: Registries, reference: str) -> tuple[dict[str, Any], dict[str, Any]]:
    manifest = json.loads(_get(reg, reference, "manifests/{tag}",
                               "application/vnd.oci.image.manifest.v1+json,"
                               "application/vnd.docker.distribution.manifest.v2+json"))
    config = json.loads(_get(reg, reference, f"blobs/{manifest['config']['digest']}"))
    return manifest, config


def test_missing_requirements_become_one_layer_on_the_python_path_shared_by_models(
        registries: Registries, mlflow_image: str, tmp_path: Path) -> None:
    events = Events()
    first = _build(registries, mlflow_image, _model(tmp_path / "a", "a", REQUIREMENTS),
                   "model-a", events)
    message, _ = events.find("installing")
    assert "jmespath==1.1.0, markupsafe==3.0.2" in message, message
    assert "Python 3.11" in message and "x86_64" in message, message
    assert "pandas>=99 wanted, the base image's pandas" in events.find("left to the base")[0]
    pushed = events.find("image pushed")[1]
    assert pushed["dependencies"] == ["jmespath==1.1.0", "markupsafe==3.0.2"]
    assert pushed["dependency_layer_reused"] is False

    manifest, config = _image(registries, first.reference)
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    deps_path, *rest = env["PYTHONPATH"].split(":")
    assert deps_path.startswith("/opt/management-agent/deps/")
    assert rest == ["/opt/mlflow/site", "/opt/ml/site"]  # the base's path follows
    deps_layer = manifest["layers"][-2]  # then the model layer
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])

    blob = _get(registries, first.reference, f"blobs/{deps_layer['digest']}")
    rootfs = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(rootfs, filter="data")
    site = rootfs / deps_path.lstrip("/")
    # only what the base lacks: numpy and pandas stay the base's
    names = sorted(p.name.lower() for p in site.iterdir())
    assert any(n.startswith("jmespath-1.1.0") for n in names), names
    assert any(n.startswith("markupsafe-3.0.2") for n in names), names
    assert not any(n.startswith(("numpy", "pandas", "mlflow", "bin")) for n in names), names
    assert list(site.glob("markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so"))
    # the host is bookworm + CPython 3.11 as the image: the compiled wheel imports there
    probe = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); "
         "import jmespath, markupsafe, markupsafe._speedups; "
         "print(jmespath.search('a', {'a': str(markupsafe.escape('<'))}))"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "&lt;"

    # another model, the same requirements written differently: the layer is reused
    again = Events()
    second = _build(registries, mlflow_image, _model(
        tmp_path / "b", "b", "# same set\nmarkupsafe == 3.0.2\nmlflow==3.17.2\n"
        "JMESPath==1.1.0\npandas>=99\nnumpy\n"), "model-b", again)
    assert second.digest != first.digest
    assert not any("installing" in m for m, _ in again.items), again.items
    assert "dependency layer reused" in again.find("dependency layer")[0]
    pushed = again.find("image pushed")[1]
    assert pushed["dependency_layer_reused"] is True
    model_layer = _image(registries, second.reference)[0]["layers"][-1]
    # uploaded: the model layer and the config, nothing of the dependency layer
    assert pushed["bytes_uploaded"] < model_layer["size"] + 64 * 1024, pushed
    assert _image(registries, second.reference)[0]["layers"][-2] == deps_layer


def test_unsatisfiable_requirement_fails_with_pips_reason(
        registries: Registries, mlflow_image: str, tmp_path: Path) -> None:
    source = _model(tmp_path / "bad", "bad", "management-agent-no-such-package-zz==1.0\n")
    with pytest.raises(InvalidActionError) as caught:
        _build(registries, mlflow_image, source, "model-bad", Events())
    message = str(caught.value)
    assert "No matching distribution found for management-agent-no-such-package-zz==1.0" \
        in message, message
    assert "Python 3.11" in message and "Traceback" not in message, message


def test_requirements_the_base_has_need_no_layer(
        registries: Registries, mlflow_image: str, tmp_path: Path) -> None:
    events = Events()
    built = _build(registries, mlflow_image, _model(
        tmp_path / "c", "c", "mlflow==3.17.2\nscikit-learn\nnumpy\n"), "model-c", events)
    assert not any("dependency layer" in m or "installing" in m for m, _ in events.items)
    _, config = _image(registries, built.reference)
    assert "dependencies" not in events.find("image pushed")[1]
    env = dict(e.split("=", 1) for e in config["config"]["Env"])
    assert env["PYTHONPATH"] == "/opt/mlflow/site:/opt/ml/site"

"""The MLflow Model Registry adapter against the harness's real MLflow server.

The agent runtime runs in-process with the filesystem plugin, so each test
can look at what was deployed; MLflow, its REST API and its tags are real.
An MLflow outage is produced with `FaultyProxy` in front of the server.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from agent.config import Settings, load_settings
from agent.controlplane.mlflow import MLflowControlPlane, deployment_id_for
from agent.plugins.filesystem import FilesystemPlugin
from agent.runtime import EXIT_CONTROL_PLANE_UNREACHABLE, Runtime
from tests.fixtures.harness import Mlflow
from tests.integration.core.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


class Registry:
    """Test-side REST helper: what a data scientist does in the MLflow UI."""

    def __init__(self, uri: str) -> None:
        self.api = uri.rstrip("/") + "/api/2.0/mlflow"

    def call(self, method: str, path: str, **body: Any) -> dict[str, Any]:
        if method == "GET":
            response = requests.get(f"{self.api}/{path}", params=body, timeout=10)
        else:
            response = requests.request(method, f"{self.api}/{path}", json=body, timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def model(self, name: str, **tags: str) -> None:
        self.call("POST", "registered-models/create", name=name,
                  tags=[{"key": k, "value": v} for k, v in {"deploy": "true", **tags}.items()])

    def version(self, name: str) -> str:
        created = self.call("POST", "model-versions/create", name=name,
                            source=f"s3://mlflow/{name}/{secrets.token_hex(4)}")
        return str(created["model_version"]["version"])

    def alias(self, name: str, alias: str, version: str) -> None:
        self.call("POST", "registered-models/alias", name=name, alias=alias, version=version)

    def drop_alias(self, name: str, alias: str) -> None:
        self.call("DELETE", "registered-models/alias", name=name, alias=alias)

    def tag_model(self, name: str, key: str, value: str) -> None:
        self.call("POST", "registered-models/set-tag", name=name, key=key, value=value)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        data = self.call("GET", "model-versions/get", name=name, version=version)
        return {t["key"]: t["value"] for t in data["model_version"].get("tags", [])}


@pytest.fixture
def registry(mlflow: Mlflow) -> Registry:
    return Registry(mlflow.uri)


@pytest.fixture
def model_name() -> str:
    return f"iris-{secrets.token_hex(3)}"


def agent_settings(tmp_path: Path, uri: str, model_name: str, **mlflow: Any) -> Settings:
    overrides = {
        "control_plane.kind": "mlflow",
        "control_plane.environment_id": "mlflow-env",
        "control_plane.timeout_seconds": 2,
        "control_plane.mlflow.tracking_uri": uri,
        "control_plane.mlflow.name_pattern": model_name,
        "plugin.filesystem.output_dir": str(tmp_path / "out"),
        "plugin.kubernetes.namespace": "models",
        "plugin.kubernetes.model_delivery": "storage-initializer",
        "plugin.kubernetes.agent_image": "registry.local/agent:1",
        "plugin.kubernetes.outfacing_url_root": "http://models.local/",
        "images.builder": "none",
        **{f"control_plane.mlflow.{k}": v for k, v in mlflow.items()},
    }
    return load_settings(environ={}, overrides=[f"{k}={v}" for k, v in overrides.items()])


def run_once(settings: Settings) -> int:
    control_plane = MLflowControlPlane(settings)
    plugin = FilesystemPlugin(settings)
    control_plane.attach_plugin(plugin)
    return Runtime(settings, control_plane, plugin).run(once=True)


def deployed(tmp_path: Path) -> dict[str, dict[str, Any]]:
    out = tmp_path / "out"
    found = {}
    for state in sorted(out.glob("*/state.json")):
        found[state.parent.name] = yaml.safe_load(state.read_text())
    return found


def test_alias_promotion_drives_start_replace_and_stop(tmp_path: Path, mlflow: Mlflow,
                                                       registry: Registry,
                                                       model_name: str) -> None:
    settings = agent_settings(tmp_path, mlflow.uri, model_name)
    registry.model(model_name)
    v1 = registry.version(model_name)
    registry.alias(model_name, "production", v1)
    dep = deployment_id_for(model_name, "production")

    assert run_once(settings) == 0
    assert deployed(tmp_path)[dep]["model_id"] == f"{model_name}/{v1}"
    tags = registry.version_tags(model_name, v1)
    assert tags["management-agent.state"] == "ready"
    assert tags["management-agent.url"].startswith(f"http://models.local/{dep}")
    assert tags["management-agent.updated"]

    assert run_once(settings) == 0, "nothing changed: no action"
    v2 = registry.version(model_name)
    registry.alias(model_name, "production", v2)
    assert run_once(settings) == 0
    assert deployed(tmp_path)[dep]["model_id"] == f"{model_name}/{v2}"
    assert registry.version_tags(model_name, v2)["management-agent.state"] == "ready"

    registry.drop_alias(model_name, "production")
    assert run_once(settings) == 0
    assert dep not in deployed(tmp_path)
    assert registry.version_tags(model_name, v2)["management-agent.state"] == "stopped"


def test_two_aliases_on_one_version_are_two_deployments(tmp_path: Path, mlflow: Mlflow,
                                                        registry: Registry,
                                                        model_name: str) -> None:
    settings = agent_settings(tmp_path, mlflow.uri, model_name,
                              aliases='["production", "staging"]')
    registry.model(model_name)
    version = registry.version(model_name)
    registry.alias(model_name, "production", version)
    registry.alias(model_name, "staging", version)
    registry.alias(model_name, "experiment", version)  # not watched
    assert run_once(settings) == 0
    assert set(deployed(tmp_path)) == {deployment_id_for(model_name, "production"),
                                       deployment_id_for(model_name, "staging")}


def test_tags_override_the_spec_and_undeploy_stops(tmp_path: Path, mlflow: Mlflow,
                                                   registry: Registry, model_name: str) -> None:
    settings = agent_settings(tmp_path, mlflow.uri, model_name)
    registry.model(model_name, **{"management-agent.replicas": "3"})
    version = registry.version(model_name)
    registry.alias(model_name, "production", version)
    assert run_once(settings) == 0
    dep = deployment_id_for(model_name, "production")
    objects = list(yaml.safe_load_all((tmp_path / "out" / dep / "manifests.yaml").read_text()))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3

    registry.tag_model(model_name, "management-agent.undeploy", "true")
    assert run_once(settings) == 0
    assert dep not in deployed(tmp_path)


def test_models_without_the_deploy_tag_are_ignored(tmp_path: Path, mlflow: Mlflow,
                                                   registry: Registry, model_name: str) -> None:
    settings = agent_settings(tmp_path, mlflow.uri, model_name)
    registry.call("POST", "registered-models/create", name=model_name)
    registry.alias(model_name, "production", registry.version(model_name))
    assert run_once(settings) == 0
    assert deployed(tmp_path) == {}


def test_registry_outage_changes_nothing(tmp_path: Path, mlflow: Mlflow, registry: Registry,
                                         model_name: str) -> None:
    registry.model(model_name)
    registry.alias(model_name, "production", registry.version(model_name))
    with FaultyProxy(mlflow.uri) as proxy:
        settings = agent_settings(tmp_path, proxy.url, model_name)
        assert run_once(settings) == 0
        before = deployed(tmp_path)
        assert len(before) == 1
        for mode in ("reset", "500", "garbage"):
            proxy.mode = mode
            assert run_once(settings) == EXIT_CONTROL_PLANE_UNREACHABLE
            assert deployed(tmp_path) == before, f"an MLflow {mode} must not stop deployments"
        proxy.mode = "pass"
        assert run_once(settings) == 0
        assert deployed(tmp_path) == before, "back online: no spurious action"


def test_deployment_ids_are_dns_labels() -> None:
    assert deployment_id_for("fraud", "production") == "fraud-production"
    odd = deployment_id_for("Fraud_Model.v2", "Production")
    assert odd.startswith("fraud-model-v2-production-") and len(odd) <= 63
    long = deployment_id_for("m" * 80, "production")
    assert len(long) <= 63 and long != deployment_id_for("m" * 81, "production")
    assert deployment_id_for("Iris", "production") != deployment_id_for("iris", "production")
    assert deployment_id_for("iris", "Production") != deployment_id_for("iris", "production")


def test_override_tag_change_on_a_running_version_converges_without_a_restart(
        tmp_path: Path, mlflow: Mlflow, registry: Registry, model_name: str) -> None:
    settings = agent_settings(tmp_path, mlflow.uri, model_name)
    registry.model(model_name)
    version = registry.version(model_name)
    registry.alias(model_name, "production", version)
    dep = deployment_id_for(model_name, "production")
    control_plane = MLflowControlPlane(settings)  # one process: one adapter throughout
    plugin = FilesystemPlugin(settings)
    control_plane.attach_plugin(plugin)

    def replicas() -> int:
        objects = yaml.safe_load_all((tmp_path / "out" / dep / "manifests.yaml").read_text())
        return int(next(o for o in objects if o["kind"] == "Deployment")["spec"]["replicas"])

    assert Runtime(settings, control_plane, plugin).run(once=True) == 0
    assert replicas() == 1
    assert control_plane.pending() == [], "converged: nothing to do"

    registry.call("POST", "model-versions/set-tag", name=model_name, version=version,
                  key="management-agent.replicas", value="3")
    assert [(str(a.type), a.deployment_id) for a in control_plane.pending()] == [
        ("deployment_start", dep)]
    assert Runtime(settings, control_plane, plugin).run(once=True) == 0
    assert replicas() == 3
    assert control_plane.pending() == []


def test_an_action_that_kills_the_agent_is_failed_after_max_delivery_attempts(
        tmp_path: Path, mlflow: Mlflow, registry: Registry, model_name: str) -> None:
    """Each claim counts on the version's tags before the action runs, so a crash (here: a
    new adapter that never completed the claim, as after an OOM kill) is one more attempt;
    past `runtime.max_delivery_attempts` the runtime fails the action without running it and
    the version says why. A success clears the count."""
    settings = agent_settings(tmp_path, mlflow.uri, model_name)
    settings.runtime.max_delivery_attempts = 3
    registry.model(model_name)
    version = registry.version(model_name)
    registry.alias(model_name, "production", version)

    for expected in (1, 2, 3):  # three agent starts that die while deploying
        crashed = MLflowControlPlane(settings)
        crashed.attach_plugin(FilesystemPlugin(settings))
        [ref] = crashed.pending()
        assert crashed.claim(ref.id, 60).attempt == expected
        tag = registry.version_tags(model_name, version)["management-agent.attempt"]
        assert tag.endswith(f":{expected}")

    assert run_once(settings) == 0  # the fourth delivery is not run
    assert deployed(tmp_path) == {}
    tags = registry.version_tags(model_name, version)
    assert tags["management-agent.status"] == "failing"
    assert "max_delivery_attempts" in tags["management-agent.message"]

    settings.runtime.max_delivery_attempts = 10  # ops raise the limit: it deploys, count cleared
    assert run_once(settings) == 0
    assert deployed(tmp_path)[deployment_id_for(model_name, "production")]["model_id"] \
        == f"{model_name}/{version}"
    assert registry.version_tags(model_name, version)["management-agent.attempt"] == ""

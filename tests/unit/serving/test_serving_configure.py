"""configure_for_model on real model directories (file://) and the rendered Deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.artifacts.settings import ArtifactSettings
from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.manifests import prediction_url, render
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.serving import configure_for_model


def allowed(root: Path) -> ArtifactSettings:
    """file:// models are refused outside artifacts.file_roots (docs/security.md)."""
    return ArtifactSettings(file_roots=[root])



def spec(uri: str, **extra: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {"id": "iris", "model": {"id": "m1", "uri": uri}, **extra})


def settings(**extra: Any) -> KubernetesSettings:
    return KubernetesSettings.model_validate(
        {"namespace": "models", "outfacing_url_root": "http://h.example/", **extra})


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    server = objects[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in server["env"]}


def test_sklearn_file_configures_mlserver_and_the_rendered_deployment(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"not loaded here")
    configured, found = configure_for_model(spec(f"file://{tmp_path}"), settings(),
                                            allowed(tmp_path))
    assert found == ("model format: a scikit-learn model file at model.joblib: MLServer "
                     "runtime mlserver_sklearn.SKLearnModel")
    objects = render(configured, settings(), "reg/mlserver:1", "env")
    env = env_of(objects)
    assert env["MLSERVER_MODEL_IMPLEMENTATION"] == "mlserver_sklearn.SKLearnModel"
    assert env["MLSERVER_MODEL_URI"] == "/mnt/models/model.joblib"
    assert env["MLSERVER_MODELS_DIR"] == "/mnt/models" and env["MLSERVER_HTTP_PORT"] == "8080"
    server = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/models/iris/ready"
    assert prediction_url(configured, settings()) == "http://h.example/iris/v2/models/iris/infer"


def test_the_deployments_own_profile_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    own = spec(f"file://{tmp_path}", config={"profile": {"env": {
        "MLSERVER_MODEL_IMPLEMENTATION": "my.Runtime"}}})
    configured, _ = configure_for_model(own, settings(), allowed(tmp_path))
    assert env_of(render(configured, settings(), "i", "e"))[
        "MLSERVER_MODEL_IMPLEMENTATION"] == "my.Runtime"


def test_unservable_model_fails_before_anything_is_rendered(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    with pytest.raises(InvalidActionError, match="deployment iris: server profile "
                       "'mlflow-pyfunc' cannot serve this model: found a scikit-learn"):
        configure_for_model(spec(f"file://{tmp_path}", server_profile="mlflow-pyfunc"),
                            settings(), allowed(tmp_path))


def test_custom_profiles_and_ready_built_images_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text("print()")
    tiny = settings(server_profiles={"tiny": {"image": "i"}}, default_server_profile="tiny")
    original = spec(f"file://{tmp_path}")
    assert configure_for_model(original, tiny, allowed(tmp_path)) == (original, None)
    image = DeploymentSpec.model_validate({"id": "iris", "model": {"id": "m", "image": "r/i:1"}})
    assert configure_for_model(image, settings(), allowed(tmp_path)) == (image, None)


def test_settings_change_only_the_fields_they_set_on_a_builtin(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"x")
    local = settings(server_profiles={"kserve": {"image": "127.0.0.1:5000/servers/kserve:1"}},
                     default_server_profile="kserve")
    configured, _ = configure_for_model(spec(f"file://{tmp_path}"), local, allowed(tmp_path))
    server = render(configured, local, "i", "e")[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"] == ["--model_name=iris", "--model_dir=/mnt/models",
                              "--http_port=8080"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models/iris"


@pytest.mark.parametrize("profile", ["mlserver", "mlflow-pyfunc", "kserve"])
def test_builtin_profiles_satisfy_pod_security_restricted(profile: str) -> None:
    s = settings(default_server_profile=profile)
    pod = render(spec("s3://b/m"), s, "i", "e")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

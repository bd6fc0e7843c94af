"""The chart renders valid Kubernetes objects and an agent config the agent accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_helpers import (
    CHART,
    CRD_KINDS,
    EXAMPLES,
    MINIMAL,
    agent_config,
    deployment_env,
    example,
    find,
    helm,
    load_rendered_settings,
    mounts_by_path,
    render,
    render_error,
    value_args,
    volumes_by_name,
)
from pydantic import BaseModel

SCENARIOS: dict[str, tuple[list[Path], list[str]]] = {
    "minimal": ([MINIMAL], []),
    **{name: (example(name), []) for name in EXAMPLES},
    "kaniko": ([MINIMAL], ["imageBuilder.builder=kaniko"]),
    "ca-secret": ([MINIMAL], ["caBundle.secret=all-ca", "imageBuilder.builder=kaniko"]),
    "mlflow": ([MINIMAL], ["controlPlane.kind=mlflow",
                           "controlPlane.mlflow.trackingUri=http://mlflow:5000",
                           "controlPlane.mlflow.tokenSecret.name=mlflow-token",
                           "controlPlane.mlflow.username=agent",
                           "controlPlane.mlflow.passwordSecret.name=mlflow-password"]),
    "everything-on": ([MINIMAL], [
        "agent.replicas=2", "agent.leaderElection.enabled=true",
        "metrics.serviceMonitor.enabled=true", "networkPolicy.enabled=true",
        "controlPlane.caBundle.configMap=cp-ca", "artifacts.caBundle.secret=art-ca",
        "caBundle.configMap=all-ca", "imageBuilder.credentialHosts={mirror.example:5000}",
        "imageBuilder.registryCA.configMap=reg-ca", "imageBuilder.baseImageSecretName=base",
        "imageBuilder.registryAuth=basic", "imageBuilder.username=bot",
        "imageBuilder.passwordSecret.name=reg-pass", "predictionServer.probePublicUrl=true",
        "predictionServer.publicProbeCA.configMap=pub-ca", "predictionServer.ingressMode=gateway",
        "predictionServer.gatewayParentRefs[0].name=gw",
        "predictionServer.securityContext.runAsUser=1000", "imageBuilder.compressionLevel=3",
        "artifacts.defaultCredentialsSecret=models", "artifacts.s3AddressingStyle=path",
        "artifacts.credentialsSecretPrefix=models-",
        "artifacts.credentialsSecretLabel=management-agent.io/model-credentials=true",
        "artifacts.gcsEndpointUrl=http://gcs:4443", "predictionServer.securityContext.runAsGroup=1",
        "predictionServer.securityContext.fsGroup=1", "predictionServer.monitoring.image=mon:1",
        "imageBuilder.ecr.endpointUrl=http://moto:5000", "imageBuilder.ecr.registryOverride=r:1",
        "imageBuilder.chunkSizeBytes=1048576", "imageBuilder.progressBytes=1048576",
        "imageBuilder.configMap=kaniko-config", "predictionServer.serviceAccountName=models",
        "imageBuilder.dependencies.indexUrl=https://pypi.corp.example/simple",
        "imageBuilder.dependencies.indexCredentialsSecret.name=pypi-netrc",
        "imageBuilder.dependencies.pipTimeoutSeconds=10",
        "imageBuilder.dependencies.installTimeoutSeconds=300",
        "imageBuilder.dependencies.pythonVersion=3.11",
        "imageBuilder.dependencies.glibcVersion=2.31",
        "imageBuilder.dependencies.providedBy.mlflow={mlflow-skinny}",
    ]),
    "builder-none": ([MINIMAL], ["imageBuilder.builder=none",
                                 "imageBuilder.generatedImageRepository="]),
}


@pytest.fixture(params=sorted(SCENARIOS), scope="module")
def scenario(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    files, sets = SCENARIOS[request.param]
    return request.param, render(files, sets)


@pytest.mark.parametrize("values", ["minimal", *EXAMPLES])
def test_lint_strict_passes(values: str) -> None:
    files, sets = SCENARIOS[values]
    proc = helm("lint", "--strict", str(CHART), *value_args(files, sets))
    assert "0 chart(s) failed" in proc.stdout


def test_bare_defaults_ask_for_the_control_plane_url() -> None:
    error = render_error(files=[])
    assert "controlPlane.url is required" in error


def test_every_rendered_object_is_valid_kubernetes_1_33(scenario: tuple[str, Any]) -> None:
    _, objects = scenario
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_rendered_config_is_accepted_by_the_agent(
    scenario: tuple[str, Any], tmp_path: Path
) -> None:
    _, objects = scenario
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.plugin.name == "kubernetes"
    assert settings.plugin.kubernetes.in_cluster is True
    assert settings.plugin.kubernetes.namespace == "mlops"
    assert settings.health.port == 8081


def test_config_paths_point_at_mounted_files(scenario: tuple[str, Any]) -> None:
    """Every file path in the rendered config lies under a volume mount of the agent."""
    _, objects = scenario
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mount_paths = list(mounts_by_path(container))

    def paths(node: Any, key: str = "") -> list[str]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in paths(v, k)]
        if isinstance(node, str) and (key.endswith(("_file", "_bundle")) or key == "cache_dir"):
            return [node]
        return []

    for path in paths(agent_config(objects)):
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mount_paths), path
    for value in deployment_env(objects).values():
        if value.startswith("/"):
            assert any(value == m or value.startswith(m + "/") for m in mount_paths), value


def test_the_index_login_is_a_mounted_netrc_never_a_value() -> None:
    objects = render([MINIMAL], [
        "imageBuilder.dependencies.indexUrl=https://pypi.corp.example/simple",
        "imageBuilder.dependencies.indexCredentialsSecret.name=pypi-netrc"])
    deps = agent_config(objects)["images"]["dependencies"]
    assert deps["index_credentials_file"] == "/var/run/secrets/management-agent/index/netrc"
    assert "@" not in deps["index_url"]
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    volume = volumes_by_name(pod)["index-credentials"]
    assert volume["secret"]["secretName"] == "pypi-netrc"
    assert volume["secret"]["items"] == [{"key": "netrc", "path": "netrc"}]


def test_the_api_token_is_a_mounted_file_never_a_value() -> None:
    objects = render()
    config = agent_config(objects)
    assert "token" not in config["control_plane"]
    env = deployment_env(objects)
    assert env["MGMT_AGENT_CONTROL_PLANE__TOKEN_FILE"] == \
        "/var/run/secrets/management-agent/control-plane/token"
    assert env["MGMT_AGENT_CONFIG"] == "/etc/management-agent/config.yaml"
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    token = volumes_by_name(pod)["control-plane-token"]["secret"]
    assert token == {"secretName": "management-agent-token",
                     "items": [{"key": "token", "path": "token"}]}


def test_config_change_rolls_the_agent_pod() -> None:
    def checksum(sets: list[str]) -> str:
        deployment = find(render(sets=sets), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum([]) == checksum([])
    assert checksum([]) != checksum(["agent.workers=8"])


def test_agent_pod_is_locked_down_and_probed() -> None:
    pod = find(render(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["ports"][0]["containerPort"] == 8081
    assert "/tmp" in mounts_by_path(container)
    assert pod["terminationGracePeriodSeconds"] == 30


def test_helm_test_pod_runs_doctor_with_the_agents_config() -> None:
    objects = render(sets=["tests.modelUri=s3://models/iris"])
    pod = find(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    agent_pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    doctor = pod["spec"]["containers"][0]
    assert doctor["args"] == ["doctor", "--model-uri", "s3://models/iris"]
    assert doctor["env"] == agent_pod["containers"][0]["env"]
    assert doctor["volumeMounts"] == agent_pod["containers"][0]["volumeMounts"]
    assert pod["spec"]["volumes"] == agent_pod["volumes"]
    assert pod["spec"]["serviceAccountName"] == agent_pod["serviceAccountName"]


def test_fullname_is_truncated_to_63_characters() -> None:
    for objects in (render(release="r" * 53), render(sets=["fullnameOverride=" + "f" * 70])):
        for obj in objects:
            assert len(obj["metadata"]["name"]) <= 63
            assert not obj["metadata"]["name"].endswith("-")


def test_image_tag_defaults_to_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    from agent import __version__

    assert chart["appVersion"] == __version__
    image = find(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{__version__}")


def _documented_keys_problems(text: str) -> list[str]:
    """Keys of values.yaml that carry a value but no `# --` comment (nor a documented parent)."""
    problems: list[str] = []
    stack: list[tuple[int, bool]] = []  # (indent, documented)
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if match and not stripped.startswith("-"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            documented = previous.startswith("# --") or previous.startswith("# @default")
            inherited = any(doc for _, doc in stack)
            is_group = match.group(3).strip() == ""
            if not (documented or inherited or is_group):
                problems.append(f"line {number}: {match.group(2)}")
            stack.append((indent, documented))
        if stripped:
            previous = stripped
    return problems


def test_every_value_is_documented() -> None:
    assert _documented_keys_problems((CHART / "values.yaml").read_text()) == []


def test_schema_knows_exactly_the_keys_of_values_yaml() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], props: dict[str, Any], prefix: str) -> list[str]:
        extra = [f"{prefix}{k} (schema only)" for k in props
                 if k not in node and k != "global"]
        for key, sub in props.items():
            child = node.get(key)
            if isinstance(child, dict) and "properties" in sub and \
                    sub.get("additionalProperties") is False:
                extra += walk(child, sub["properties"], f"{prefix}{key}.")
        return extra

    assert walk(values, schema["properties"], "") == []


def _setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    paths: list[str] = []
    for name, info in model.model_fields.items():
        sub = info.annotation  # an optional section (images.base_credentials) is one value
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            paths += _setting_paths(sub, (*prefix, name))
        else:
            paths.append(".".join((*prefix, name)))
    return paths


def _rendered_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and key != "server_profiles":
            paths |= _rendered_paths(value, f"{path}.")
    return paths


def test_every_agent_setting_is_reachable_from_values() -> None:
    """Every setting the generator maps or wires (tools/chartgen) reaches the rendered config."""
    from agent.config import Settings
    from tools.chartgen.mapping import NOT_IN_CHART

    rendered: set[str] = set()
    for files, sets in SCENARIOS.values():
        objects = render(files, sets)
        rendered |= _rendered_paths(agent_config(objects))
        container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        rendered |= {env["name"].removeprefix("MGMT_AGENT_").lower().replace("__", ".")
                     for env in container["env"] if env["name"].startswith("MGMT_AGENT_")}
    missing = [path for path in _setting_paths(Settings)
               if path not in rendered
               and not any(path == n or path.startswith(n + ".") for n in NOT_IN_CHART)]
    assert missing == [], (
        "agent settings no scenario renders: give one of SCENARIOS a value for them, or list "
        f"them in tools/chartgen/mapping.py NOT_IN_CHART: {missing}")

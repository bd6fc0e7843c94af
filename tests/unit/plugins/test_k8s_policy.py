"""Ops' deployment policy: what `spec.config` may change about a prediction server's pods."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.settings import KubernetesSettings
from tests.unit.plugins.test_k8s_manifests import validate


def spec(config: dict[str, Any]) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {"id": "dep-1", "model": {"id": "m", "image": "reg/img:1"}, "config": config})


def settings(**policy: Any) -> KubernetesSettings:
    extra = policy.pop("k8s", {})
    return KubernetesSettings.model_validate(
        {"namespace": "models", "deployment_policy": policy, **extra})


def pod(config: dict[str, Any], s: KubernetesSettings) -> dict[str, Any]:
    objects = render(spec(config), s, "reg/img:1", "e")
    validate(objects)
    return dict(objects[0]["spec"]["template"]["spec"])


def refused(config: dict[str, Any], s: KubernetesSettings) -> str:
    with pytest.raises(InvalidActionError) as caught:
        render(spec(config), s, "reg/img:1", "e")
    return str(caught.value)


def test_a_deployment_may_not_name_a_service_account_ops_did_not_allow() -> None:
    message = refused({"service_account_name": "cluster-admin-sa"}, settings())
    assert "config.service_account_name 'cluster-admin-sa' is not allowed (allowed: default)" \
        in message
    assert "plugin.kubernetes.deployment_policy.allowed_service_accounts" in message
    assert "predictionServer.deploymentPolicy.allowedServiceAccounts" in message
    assert pod({"service_account_name": "default"}, settings())["serviceAccountName"] == "default"
    serving = settings(k8s={"service_account_name": "serving"})
    assert pod({"service_account_name": "serving"}, serving)["serviceAccountName"] == "serving"
    assert pod({}, serving)["serviceAccountName"] == "serving"
    patterns = settings(allowed_service_accounts=["model-*"])
    assert pod({"service_account_name": "model-a"}, patterns)["serviceAccountName"] == "model-a"


def test_the_agents_own_service_account_is_refused_even_when_a_pattern_allows_it() -> None:
    s = settings(allowed_service_accounts=["*"], agent_service_accounts=["models/agent-sa"])
    message = refused({"service_account_name": "agent-sa"}, s)
    assert "'agent-sa' is the agent's own ServiceAccount" in message
    assert "deployment_policy.agent_service_accounts" in message
    bare = settings(allowed_service_accounts=["*"], agent_service_accounts=["builder"])
    assert "agent's own" in refused({"service_account_name": "builder"}, bare)
    # the same name in another namespace is another account (and another cloud identity)
    elsewhere = settings(allowed_service_accounts=["*"],
                         agent_service_accounts=["agents/agent-sa"])
    assert pod({"service_account_name": "agent-sa"}, elsewhere)["serviceAccountName"] == \
        "agent-sa"


def test_servers_never_fall_back_to_the_agents_account() -> None:
    """An agent running as `default` next to its servers: their default would be its identity."""
    s = settings(agent_service_accounts=["models/default"])
    message = refused({}, s)
    assert "would run as the agent's own ServiceAccount 'default' in namespace models" in message
    assert "predictionServer.serviceAccountName" in message
    own = settings(agent_service_accounts=["models/default"], k8s={"service_account_name": "srv"})
    assert pod({}, own)["serviceAccountName"] == "srv"


@pytest.mark.parametrize("config", [
    {"run_as_non_root": False},
    {"profile": {"run_as_non_root": False}},
    {"profile": {"run_as_user": 0}},
    {"profile": {"run_as_user": "0"}},
])
def test_relaxing_the_security_context_needs_ops_consent(config: dict[str, Any]) -> None:
    message = refused(config, settings())
    assert "would relax the pod's security context" in message
    assert "allow_security_relaxation" in message and "allowSecurityRelaxation" in message
    allowed = pod(config, settings(allow_security_relaxation=True))
    assert allowed["securityContext"]["runAsNonRoot"] is False or \
        allowed["securityContext"].get("runAsUser") == 0


def test_tightening_or_an_ops_root_profile_is_not_a_relaxation() -> None:
    assert pod({"run_as_non_root": True}, settings())["securityContext"]["runAsNonRoot"] is True
    root_profile = settings(k8s={"server_profiles": {"rooty": {
        "image": "reg/root:1", "run_as_non_root": False}}})
    chosen = pod({"server_profile": "rooty", "run_as_non_root": False}, root_profile)
    assert chosen["securityContext"]["runAsNonRoot"] is False
    # ops' fixed user wins over a profile override, so run_as_user 0 changes nothing there
    fixed = settings(k8s={"security": {"run_as_user": 1000}})
    assert pod({"profile": {"run_as_user": 0}}, fixed)["securityContext"]["runAsUser"] == 1000


def test_tolerations_are_refused_unless_a_rule_allows_key_and_effect() -> None:
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    message = refused({"tolerations": [gpu]}, settings())
    assert "key 'nvidia.com/gpu' with effect NoSchedule is not allowed" in message
    assert "deployment_policy.allowed_tolerations" in message
    s = settings(allowed_tolerations=[{"key": "nvidia.com/*", "effects": ["NoSchedule"]}])
    assert pod({"tolerations": [gpu]}, s)["tolerations"] == [gpu]
    any_effect = {**gpu}
    del any_effect["effect"]
    assert "effect any is not allowed" in refused({"tolerations": [any_effect]}, s)
    everything = {"operator": "Exists"}
    assert "without a key (tolerates every taint)" in refused({"tolerations": [everything]}, s)
    star = settings(allowed_tolerations=[{"key": "*"}])
    assert pod({"tolerations": [everything]}, star)["tolerations"] == [everything]


def test_node_selector_keys_any_by_default_and_limited_when_ops_say() -> None:
    chosen = {"node_selector": {"pool": "gpu"}}
    assert pod(chosen, settings())["nodeSelector"] == {"pool": "gpu"}
    s = settings(allowed_node_selector_keys=["node.kubernetes.io/instance-type"])
    message = refused(chosen, s)
    assert "label key 'pool' is not allowed (allowed: node.kubernetes.io/instance-type)" in message
    assert "allowedNodeSelectorKeys" in message


@pytest.mark.parametrize(("config", "expected"), [
    ({"tolerations": [{"key": "gpu", "operator": "Equal", "value": "x", "effect": "Sometimes"}]},
     "config.tolerations: [0] effect: Input should be"),
    ({"tolerations": [{"key": "gpu", "tolerationSeconds": 5, "effect": "NoSchedule"}]},
     "tolerationSeconds needs effect NoExecute"),
    ({"tolerations": [{"key": "gpu", "operator": "Exists", "value": "v"}]},
     "operator Exists takes no value"),
    ({"tolerations": [{"key": "gpu", "seconds": 5}]}, "[0] seconds: Extra inputs"),
    ({"node_selector": {"not a key": "x"}}, "'not a key' is not a valid label key"),
    ({"node_selector": {"pool": "a b"}}, "'a b' (pool) is not a valid label value"),
    ({"service_account_name": "Agent/../x"}, "is not a valid ServiceAccount name"),
])
def test_shapes_the_api_server_would_refuse_are_named(config: dict[str, Any],
                                                       expected: str) -> None:
    assert expected in refused(config, settings(allowed_tolerations=[{"key": "*"}]))


_SHAPES: list[Any] = [None, True, 0, -1, 1.5, float("nan"), "", "oops", [], [1], ["a", 2],
                      [{"key": 1}], {}, {"a": 1}, {"a": None}, {"a": {"b": []}}, [None],
                      {"": ""}, "x" * 300]
_KEYS = ["rollout_timeout_seconds", "run_as_non_root", "service_account_name",
         "node_selector", "tolerations", "server_profile", "profile", "base_image",
         "model_path", "port", "health_path", "predict_path", "metrics_port", "metrics_path",
         "command", "args"]
_PROFILE_KEYS = ["image", "env", "run_as_user", "run_as_non_root", "command", "port", "nope"]


def test_no_config_shape_ends_as_an_internal_error() -> None:
    """Every key this plugin reads, with every odd JSON shape: rendered or an invalid action."""
    s = settings(allowed_service_accounts=["*"], allowed_tolerations=[{"key": "*"}],
                 allow_security_relaxation=True)
    cases = [{key: shape} for key, shape in itertools.product(_KEYS, _SHAPES)]
    cases += [{"profile": {key: shape}} for key, shape in itertools.product(_PROFILE_KEYS,
                                                                           _SHAPES)]
    cases += [{"tolerations": [shape]} for shape in _SHAPES]
    rendered = 0
    for config in cases:
        try:
            validate(render(spec(config), s, "reg/img:1", "e"))
            rendered += 1
        except InvalidActionError as exc:
            assert str(exc).startswith("deployment dep-1: "), (config, exc)
    assert 0 < rendered < len(cases)

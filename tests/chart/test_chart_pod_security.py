"""Every example overlay passes Pod Security "restricted": the chart's pods, and the model
pods the agent renders from the chart's config, unless a server profile says its image runs
as root (then "baseline" is what the prediction namespace can enforce).

The checks are the stand-in API server's copy of k8s.io/pod-security-admission
(tools/kube/apiserver/podsecurity.py); tests/kube pins them to the library's messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import manifests, profiles
from tests.chart.chart_helpers import (
    EXAMPLES_DIR,
    example,
    find_all,
    load_rendered_settings,
    render,
)
from tools.kube.apiserver import podsecurity

OVERLAYS = sorted(p.name for p in EXAMPLES_DIR.glob("*.yaml"))


def violations(obj: dict[str, Any], level: str) -> str:
    kind = {"Pod": "pods", "Deployment": "deployments", "Job": "jobs"}[obj["kind"]]
    template = podsecurity.pod_template(kind, obj)
    assert template is not None
    policy = podsecurity.Policy({"pod-security.kubernetes.io/enforce": level})
    return policy.evaluate("enforce", *template)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chart_pods_pass_restricted(overlay: str) -> None:
    objects = render(example(overlay))
    pods = find_all(objects, "Deployment") + find_all(objects, "Pod")
    assert {o["kind"] for o in pods} == {"Deployment", "Pod"}  # the agent and its helm test
    for obj in pods:
        assert violations(obj, "restricted") == "", (overlay, obj["metadata"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_pods_pass_restricted_unless_the_profile_runs_as_root(overlay: str,
                                                                   tmp_path: Path) -> None:
    settings = load_rendered_settings(render(example(overlay)), tmp_path).plugin.kubernetes
    for name in profiles.profiles(settings):
        spec = DeploymentSpec.model_validate({
            "id": "psa", "server_profile": name,
            "model": {"id": "m", "uri": "s3://bucket/model", "image": "registry.test/m:1"}})
        profile = profiles.resolve_profile(spec, settings)
        deployment = next(o for o in manifests.render(spec, settings, "registry.test/m:1", "e")
                          if o["kind"] == "Deployment")
        says_root = profile.run_as_non_root is False or (
            profile.run_as_non_root is None and not settings.security.run_as_non_root)
        if says_root:  # the prediction namespace can enforce baseline, not restricted
            assert violations(deployment, "baseline") == "", (overlay, name)
            assert "runAsNonRoot != true" in violations(deployment, "restricted")
        else:
            assert violations(deployment, "restricted") == "", (overlay, name)


@pytest.mark.parametrize(("sets", "own"), [
    ([], ["mlops/ma-management-agent"]),
    (["imageBuilder.builder=kaniko", "predictionServer.namespace=models"],
     ["mlops/ma-management-agent", "models/ma-management-agent-image-builder"]),
    (["serviceAccount.create=false"], ["mlops/default"]),
])
def test_the_chart_names_the_agents_own_service_accounts_to_the_policy(
        sets: list[str], own: list[str], tmp_path: Path) -> None:
    """A deployment asking for the agent's (or the Kaniko builder's) identity is refused."""
    settings = load_rendered_settings(render(sets=sets), tmp_path)
    policy = settings.plugin.kubernetes.deployment_policy
    assert policy.agent_service_accounts == own
    assert policy.allowed_service_accounts == ["default"]
    assert policy.allow_security_relaxation is False and policy.allowed_tolerations == []
    k8s = settings.plugin.kubernetes
    assert own[-1].startswith(f"{k8s.namespace}/")  # where prediction servers (and Kaniko) run
    spec = DeploymentSpec.model_validate({
        "id": "d1", "config": {"service_account_name": own[-1].split("/")[1]},
        "model": {"id": "m", "image": "reg/m:1"}})
    with pytest.raises(InvalidActionError, match="agent's own ServiceAccount"):
        manifests.render(spec, k8s, "reg/m:1", "e")

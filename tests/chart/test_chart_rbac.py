"""The chart's Role grants exactly what `management-agent doctor` checks (one list)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, example, find_all, load_rendered_settings, render

from agent.doctor import REQUIRED_PERMISSIONS, required_permissions

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def _granted(objects: list[dict[str, Any]]) -> set[Grant]:
    roles = find_all(objects, "Role")
    assert len(roles) == 1
    return {(group, resource, verb)
            for rule in roles[0]["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def _required(settings: Any) -> set[Grant]:
    return {(p.api_group, p.resource, verb)
            for p in required_permissions(settings) for verb in p.verbs}


@pytest.mark.parametrize(
    ("files", "sets"),
    [
        ([], []),
        ([], ["imageBuilder.builder=kaniko"]),
        ([], ["agent.replicas=2", "agent.leaderElection.enabled=true"]),
        ([], ["predictionServer.ingressMode=gateway",
              "predictionServer.gatewayParentRefs[0].name=gw"]),
        ([], ["predictionServer.ingressMode=none"]),
        (["openshift.yaml"], []),
        (["eks-ecr.yaml"], ["imageBuilder.builder=kaniko"]),
    ],
)
def test_role_grants_exactly_the_documented_permissions(
    files: list[str], sets: list[str], tmp_path: Path
) -> None:
    paths = [p for f in files for p in example(f)] or [CHART / "ci" / "minimal-values.yaml"]
    objects = render(paths, sets)
    settings = load_rendered_settings(objects, tmp_path)
    assert _granted(objects) == _required(settings)


def test_role_lives_in_the_prediction_namespace_and_binds_the_agent() -> None:
    objects = render(sets=["predictionServer.namespace=models"])
    role = find_all(objects, "Role")[0]
    binding = find_all(objects, "RoleBinding")[0]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "models"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ma-management-agent",
                                    "namespace": "mlops"}]


def test_kaniko_rules_follow_image_builder_rbac_create() -> None:
    objects = render(sets=["imageBuilder.builder=kaniko", "imageBuilder.rbac.create=false"])
    assert not {g for g in _granted(objects) if g[1] == "jobs"}


def test_rbac_create_false_renders_no_role() -> None:
    assert find_all(render(sets=["rbac.create=false"]), "Role") == []


def test_every_role_rule_says_why() -> None:
    lines = (CHART / "templates" / "role.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            above = [x.strip() for x in lines[max(0, number - 6):number]]
            assert any(x.startswith("#") for x in above), f"rule at line {number + 1} unexplained"


def test_every_permission_has_a_reason() -> None:
    assert all(p.why for p in REQUIRED_PERMISSIONS)

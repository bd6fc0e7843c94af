"""The agent image: the unpublished placeholder fails the install with what to do instead."""

from __future__ import annotations

from tests.chart.chart_helpers import MINIMAL, find, render, render_error


def test_placeholder_repository_fails_with_the_build_command() -> None:
    error = render_error(sets=["agent.image.repository=ghcr.io/management-agent/management-agent"])
    assert "agent.image.repository is the unpublished placeholder" in error
    assert "tools/build-agent-image --push" in error


def test_placeholder_fails_even_with_a_tag_override() -> None:
    # a tag alone does not make the placeholder repository exist
    error = render_error(sets=["agent.image.repository=ghcr.io/management-agent/management-agent",
                               "agent.image.tag=1.0.0"])
    assert "unpublished placeholder" in error


def test_a_pushed_repository_is_used_by_the_agent_and_its_helm_test() -> None:
    objects = render([MINIMAL], ["agent.image.repository=registry.corp/ml/management-agent",
                                 "agent.image.tag=0.9.1"])
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.corp/ml/management-agent:0.9.1"
    tests = [o for o in objects if o["kind"] == "Pod"]
    assert tests and all(c["image"] == "registry.corp/ml/management-agent:0.9.1"
                         for t in tests for c in t["spec"]["containers"])

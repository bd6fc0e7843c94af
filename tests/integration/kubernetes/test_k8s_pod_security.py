"""KubernetesPlugin in a namespace that enforces Pod Security "restricted" (harness cluster).

A real API server admits the Deployment but refuses its pods; the agent must report the
admission's reason instead of waiting for its rollout timeout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from agent.model import Status
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import harness_namespace
from tests.integration.kubernetes.test_k8s_rollout import _settings, events, spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def restricted() -> Iterator[dict[str, str]]:
    env = require(harness_vars(), "HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL", "HARNESS_BASE_IMAGE")
    with harness_namespace(env, "k8s-psa",
                           {"pod-security.kubernetes.io/enforce": "restricted"}) as restricted:
        yield restricted


def test_compliant_model_pods_run_where_restricted_is_enforced(
        restricted: dict[str, str]) -> None:
    plugin = KubernetesPlugin(_settings(restricted, restricted["NAMESPACE"]))
    try:
        result = plugin.start(spec(restricted, "psa-ok", "m1"), events())
        assert result.status == Status.PASSING, result.data.message
        plugin.stop("psa-ok", events())
    finally:
        plugin.close()


def test_refused_model_pods_are_reported_with_the_admission_reason(
        restricted: dict[str, str]) -> None:
    # ops let deployments relax the pod's security context (deployment_policy): only then
    # does the order reach the API server, whose admission refuses the pods
    plugin = KubernetesPlugin(_settings(restricted, restricted["NAMESPACE"],
                                        rollout_timeout_seconds=120,
                                        deployment_policy={"allow_security_relaxation": True}))
    try:
        t0 = time.monotonic()
        # a profile that says its image runs as root
        root = spec(restricted, "psa-root", "m1")
        root = root.model_copy(update={"config": {**root.config, "run_as_non_root": False}})
        result = plugin.start(root, events())
        took = time.monotonic() - t0
        assert result.status == Status.FAILING
        message = result.data.message or ""
        assert 'violates PodSecurity "restricted:latest": runAsNonRoot != true (pod must not ' \
               'set securityContext.runAsNonRoot=false)' in message, message
        assert took < 100, f"reported after {took:.0f}s: the rollout timeout, not the reason"
    finally:
        plugin.stop("psa-root", events())
        plugin.close()

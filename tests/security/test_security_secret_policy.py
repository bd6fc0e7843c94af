"""A deployment names the agent's own Secret as its model credentials (harness cluster).

With `artifacts.credentials_secret_prefix` set, the real KubernetesPlugin must refuse
the action before it reads a value or applies an object; a Secret the policy allows is
read as usual.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from agent.errors import AgentError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import harness_namespace
from tests.integration.kubernetes.test_k8s_rollout import _settings, events

pytestmark = [pytest.mark.integration]

CANARY = "canary-agent-token-7c1d"


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    env = require(harness_vars(), "HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL")
    with harness_namespace(env, "sec-policy") as namespaced:
        yield namespaced


def test_a_secret_outside_the_policy_is_refused_before_anything_is_applied(
        cluster: dict[str, str]) -> None:
    # the storage initializer would fetch in the pod: the Secret is still read (to recognise
    # the model) by the agent, so the policy must hold there
    settings = _settings(cluster, cluster["NAMESPACE"], default_server_profile="mlserver",
                         model_delivery="storage-initializer",
                         agent_image="registry.local/management-agent:1")
    settings.artifacts.credentials_secret_prefix = "models-"
    plugin = KubernetesPlugin(settings)
    try:
        data = {"token": base64.b64encode(CANARY.encode()).decode(),
                "host": base64.b64encode(b"models.example.com").decode()}
        plugin.client.create({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "agent-token"}, "data": data})
        spec = DeploymentSpec.model_validate({
            "id": "steal", "model": {"id": "m1", "uri": "https://models.example.com/m.joblib",
                                     "credentials_secret": "agent-token"}})
        report = events()
        with pytest.raises(AgentError) as refused:  # the worker reports it as failing
            plugin.start(spec, report)
        message = str(refused.value)
        assert "credentials secret 'agent-token' may not be used by deployments" in message
        assert "artifacts.credentials_secret_prefix" in message
        assert CANARY not in message and all(CANARY not in m for m in report.seen)
        assert plugin.client.get("apps/v1", "Deployment", "mlops-steal") is None
    finally:
        plugin.close()

"""The storage initializer behind the prediction server's own NetworkPolicy (issue 14, item 19).

Harness cluster, whose node enforces NetworkPolicy egress in each pod's network namespace.
Before: with `restrict_egress` the policy allowed only DNS, so the init container could not
reach the model store. Now the agent adds the store's rule (here an `egress_to` entry for
the harness address, where the store listens), the same policy with a wrong port keeps the
fetch out (so the pass is the policy's doing), and an uncovered host is refused before
anything is applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent.config import Settings
from agent.errors import InvalidActionError
from agent.model import DeploymentSpec, Status
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from tests.integration.kubernetes.test_k8s_rollout import (  # noqa: F401 (fixtures)
    FAKE_AGENT,
    _settings,
    bundle_server,
    cluster,
    events,
    predict,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def agent_image(cluster: dict[str, str],  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> str:
    """A stand-in agent image whose `fetch-model` GETs a JSON bundle (test_k8s_rollout)."""
    from agent.images import build_model_image

    tool = tmp_path_factory.mktemp("agent-bin")
    (tool / "management-agent").write_text(FAKE_AGENT)
    (tool / "management-agent").chmod(0o755)
    build_settings = Settings.model_validate({"artifacts": {"file_roots": [str(tool)]}, "images": {
        "builder": "direct",
        "generated_image_repository": f"{cluster['HARNESS_REGISTRY']}/sec-egress",
        "insecure_registries": [cluster["HARNESS_REGISTRY"]]}})
    tool_spec = DeploymentSpec.model_validate(
        {"id": "fake-agent", "model": {"id": "fake-agent", "uri": f"file://{tool}"}})
    return build_model_image(tool_spec, cluster["HARNESS_BASE_IMAGE"], "/usr/local/bin",
                             build_settings, lambda *a, **k: None).reference


def _plugin(cluster: dict[str, str], agent_image: str,  # noqa: F811
            egress_to: list[dict[str, Any]]) -> KubernetesPlugin:
    return KubernetesPlugin(_settings(
        cluster, cluster["NAMESPACE"], model_delivery="storage-initializer",
        agent_image=agent_image, rollout_timeout_seconds=120,
        network_policy={"enabled": True, "egress_to": egress_to}))


def _spec(cluster: dict[str, str], deployment_id: str, uri: str) -> DeploymentSpec:  # noqa: F811
    return DeploymentSpec.model_validate({
        "id": deployment_id, "model": {"id": "m1", "uri": uri},
        "config": {"base_image": cluster["HARNESS_BASE_IMAGE"],
                   "command": ["python3", "/mnt/models/server.py"]}})


@pytest.fixture
def store(bundle_server: str) -> Iterator[tuple[str, int]]:  # noqa: F811
    parts = urlsplit(bundle_server)
    assert parts.hostname and parts.port
    yield parts.hostname, parts.port


def test_the_storage_initializer_reaches_its_store_through_the_policy(
        cluster: dict[str, str], agent_image: str, bundle_server: str,  # noqa: F811
        store: tuple[str, int]) -> None:
    host, port = store
    plugin = _plugin(cluster, agent_image, [{"hosts": [host]}])
    try:
        result = plugin.start(_spec(cluster, "egress-ok", bundle_server), events())
        assert result.status == Status.PASSING, result.data.message
        assert predict(result.data.prediction_url or "")["predictions"] == ["fetched-none"]
        policy = plugin.client.get("networking.k8s.io/v1", "NetworkPolicy", "mlops-egress-ok")
        assert policy is not None
        assert {"to": [{"ipBlock": {"cidr": f"{host}/32"}}],
                "ports": [{"protocol": "TCP", "port": port}]} in policy["spec"]["egress"]
    finally:
        plugin.stop("egress-ok", events())
        plugin.close()


def test_a_policy_without_the_stores_port_keeps_the_fetch_out(
        cluster: dict[str, str], agent_image: str, bundle_server: str,  # noqa: F811
        store: tuple[str, int]) -> None:
    host, port = store
    wrong = [{"hosts": [host], "ports": [{"protocol": "TCP", "port": port + 1}]}]
    plugin = _plugin(cluster, agent_image, wrong)
    try:
        result = plugin.start(_spec(cluster, "egress-blocked", bundle_server), events())
        assert result.status == Status.FAILING
        message = result.data.message or ""
        assert "container storage-initializer fails" in message, message
        assert "No route to host" in message, message  # the node rejected the connection
    finally:
        plugin.stop("egress-blocked", events())
        plugin.close()


def test_an_uncovered_store_is_refused_before_anything_is_applied(
        cluster: dict[str, str], agent_image: str, bundle_server: str,  # noqa: F811
        tmp_path: Path) -> None:
    plugin = _plugin(cluster, agent_image, [])
    try:
        with pytest.raises(InvalidActionError, match="no rule covers that host"):
            plugin.start(_spec(cluster, "egress-none", bundle_server), events())
        assert plugin.client.get("apps/v1", "Deployment", "mlops-egress-none") is None
        assert plugin.client.get("networking.k8s.io/v1", "NetworkPolicy",
                                 "mlops-egress-none") is None
    finally:
        plugin.close()

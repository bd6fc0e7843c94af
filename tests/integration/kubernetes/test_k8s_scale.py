"""Scale and mode changes against the stand-in API server (in-process, no controllers).

Paginated listing of many deployments, route cleanup after an ingress-mode change (and on
a cluster without the OpenShift Route API), and the hand-over of spec.replicas when an HPA
takes a Deployment over. `RolloutWriter` (test_k8s_api) plays the Deployment controller's
status half and the ready pods, as there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.model import DeploymentState, Status
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from tests.fixtures.kube import KubeAPI, start_kube_api
from tests.integration.kubernetes.test_k8s_api import Events, RolloutWriter, _settings, spec

pytestmark = pytest.mark.integration

GATEWAY = {"ingress_mode": "gateway",
           "gateway_parent_refs": [{"name": "public", "namespace": "gateways"}]}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPI]:
    server = start_kube_api(tmp_path / "kube", disabled_groups=("route.openshift.io",))
    try:
        yield server
    finally:
        server.server.shutdown_all()


def _plugin(api: KubeAPI, **k8s: Any) -> KubernetesPlugin:
    return KubernetesPlugin(_settings(api.kubeconfig, **k8s))


def _lists(api: KubeAPI, resource: str) -> int:
    """apiserver_request_total of successful LIST calls of a resource."""
    text = requests.get(f"{api.url}/metrics", timeout=10).text
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if 'verb="LIST"' in line and f'resource="{resource}"' in line
               and 'code="200"' in line)


def test_environment_status_pages_through_many_deployments(api: KubeAPI) -> None:
    plugin = _plugin(api, list_page_size=25)
    try:
        count = 120
        for n in range(count):
            deployment = render(spec(f"dep-{n:03d}", model_id=f"m{n}"), plugin.k8s,
                                f"registry.local/m{n}:1", "env-a")[0]
            plugin.client.apply(deployment)
        before = _lists(api, "deployments")
        listed = plugin.environment_status(known_ids=set())
        assert sorted(d.deployment_id for d in listed.deployments) == [
            f"dep-{n:03d}" for n in range(count)]
        assert _lists(api, "deployments") - before == 5  # 120 in pages of 25
        assert len(listed.orphans) == count
    finally:
        plugin.close()


def test_stop_after_a_mode_change_removes_the_old_route(api: KubeAPI) -> None:
    """Deployed with an Ingress (an HTTPRoute); the agent is reconfigured to gateway (nginx)
    mode, then stops: the route of the old mode goes too."""
    nginx = _plugin(api)
    writer = RolloutWriter(nginx.client)
    gateway = _plugin(api, **GATEWAY)
    try:
        assert nginx.start(spec("dep-a"), Events()).status == Status.PASSING
        assert nginx.start(spec("dep-b", model_id="mb"), Events()).status == Status.PASSING
        assert nginx.client.get("networking.k8s.io/v1", "Ingress", "mlops-dep-a") is not None
        result = gateway.stop("dep-a", Events())  # the Route API is not served: skipped
        assert result.state == DeploymentState.STOPPED, result.data.message
        assert nginx.client.get("networking.k8s.io/v1", "Ingress", "mlops-dep-a") is None
        assert nginx.client.get("apps/v1", "Deployment", "mlops-dep-a") is None
        # only the stopped deployment's objects go
        assert nginx.client.get("networking.k8s.io/v1", "Ingress", "mlops-dep-b") is not None
        assert gateway.start(spec("dep-c"), Events()).status == Status.PASSING
        assert nginx.stop("dep-c", Events()).state == DeploymentState.STOPPED
        assert nginx.client.get("gateway.networking.k8s.io/v1", "HTTPRoute",
                                "mlops-dep-c") is None
    finally:
        writer.close()
        nginx.close()
        gateway.close()


def test_converging_in_the_new_mode_prunes_the_old_route(api: KubeAPI) -> None:
    nginx = _plugin(api)
    writer = RolloutWriter(nginx.client)
    gateway = _plugin(api, **GATEWAY)
    try:
        assert gateway.start(spec("dep-a"), Events()).status == Status.PASSING
        assert nginx.client.get("gateway.networking.k8s.io/v1", "HTTPRoute",
                                "mlops-dep-a") is not None
        events = Events()
        assert nginx.start(spec("dep-a"), events).status == Status.PASSING
        assert nginx.client.get("gateway.networking.k8s.io/v1", "HTTPRoute",
                                "mlops-dep-a") is None
        assert "HTTPRoute" in events.text()
        assert nginx.client.get("networking.k8s.io/v1", "Ingress", "mlops-dep-a") is not None
        # an object of the same name without the agent's labels is not the agent's to delete
        nginx.client.create({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "mlops-dep-a", "labels": {"team": "web"}},
            "spec": {"parentRefs": [{"name": "public"}]}})
        nginx.start(spec("dep-a", model_id="m2"), Events())
        assert nginx.client.get("gateway.networking.k8s.io/v1", "HTTPRoute",
                                "mlops-dep-a") is not None
    finally:
        writer.close()
        nginx.close()
        gateway.close()


def _replicas_since(client: KubeClient, name: str, resource_version: str) -> list[int]:
    """Every spec.replicas value a Deployment took after `resource_version`: a watch from
    there replays each change (no sampling), then ends after two quiet seconds."""
    return [event["object"]["spec"].get("replicas")
            for event in client.watch("apps/v1", "Deployment", resource_version=resource_version,
                                      label_selector=f"{names.LABEL_INSTANCE}={name}",
                                      timeout_seconds=2)]


def test_enabling_autoscaling_never_drops_replicas_to_one(api: KubeAPI) -> None:
    """Server-side apply resets a field its sole manager drops to the default (1): the
    agent hands spec.replicas over first, so the Deployment keeps 3 until the HPA scales."""
    plugin = _plugin(api)
    writer = RolloutWriter(plugin.client)
    try:
        assert plugin.start(spec("dep-a", replicas=3), Events()).status == Status.PASSING
        live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
        assert live is not None and live["spec"]["replicas"] == 3
        since = live["metadata"]["resourceVersion"]
        scaled = spec("dep-a", autoscaling={"min_replicas": 2, "max_replicas": 5},
                      resources={"requests": {"cpu": "100m"}})
        result = plugin.start(scaled, Events())
        assert result.status == Status.PASSING, result.data.message
        live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
        assert live is not None and live["spec"]["replicas"] == 3
        seen = _replicas_since(plugin.client, "dep-a", since)
        assert seen and 1 not in seen, seen
        owners = {e["manager"] for e in live["metadata"]["managedFields"]
                  if "f:replicas" in (e.get("fieldsV1") or {}).get("f:spec", {})}
        assert owners == {"management-agent-handover-to-hpa"}
        hpa = plugin.client.get("autoscaling/v2", "HorizontalPodAutoscaler", "mlops-dep-a")
        assert hpa is not None and hpa["spec"]["minReplicas"] == 2
    finally:
        writer.close()
        plugin.close()

"""Cheap steady state: what an idle agent costs the control plane and the Kubernetes API.

Real servers only: the Kubernetes API stand-in (fixture `kube_api`, no
controllers) and the reference control plane process, each behind a
`CountingProxy` that records every request it forwards. The bounds are
counts, not times:

- an idle poll is exactly one control-plane request;
- a heartbeat over 100 managed deployments is one LIST per resource kind
  (Deployments, Pods), no GET of single objects and no write;
- the Kubernetes client's QPS/burst come from settings.plugin.kubernetes and
  no window of requests ever exceeds `burst + qps * window`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import Settings
from agent.controlplane.http import NativeControlPlane
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from agent.runtime import Runtime
from tests.fixtures.controlplane import ControlPlaneServer
from tests.fixtures.kube import KubeAPI
from tests.integration.ha.counting_proxy import CountingProxy

pytestmark = pytest.mark.integration

DEPLOYMENTS = 100
NAMESPACE = "default"


def kubeconfig_via(proxy: CountingProxy, kubeconfig: Path, dest: Path) -> Path:
    """A copy of `kubeconfig` whose server is the proxy."""
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = proxy.url
    dest.write_text(yaml.safe_dump(config))
    return dest


def agent_settings(kubeconfig: Path, cp_url: str = "http://127.0.0.1:9",
                   env_id: str = "env-budget", token: str | None = None,
                   **k8s: Any) -> Settings:
    return Settings.model_validate({
        "control_plane": {"url": cp_url, "environment_id": env_id, "token": token,
                          "poll_interval_seconds": 0.2, "heartbeat_interval_seconds": 0.5,
                          "timeout_seconds": 5},
        "runtime": {"workers": 2, "shutdown_grace_seconds": 1},
        "health": {"enabled": False},
        "images": {"builder": "none"},
        "plugin": {"name": "kubernetes", "kubernetes": {
            "kubeconfig": str(kubeconfig), "namespace": NAMESPACE,
            "outfacing_url_root": "http://127.0.0.1:8080/",
            "default_server_profile": "custom", **k8s}},
    })


def create_managed_deployments(kubeconfig: Path, count: int, env_id: str) -> None:
    """The objects the plugin would apply for `count` deployments, applied directly."""
    settings = agent_settings(kubeconfig, env_id=env_id, qps=1000, burst=1000)
    client = KubeClient(settings.plugin.kubernetes)
    try:
        for index in range(count):
            spec = DeploymentSpec.model_validate({
                "id": f"dep-{index:04d}",
                "model": {"id": "m1", "image": "registry.local/models/m1:1"}})
            for obj in render(spec, settings.plugin.kubernetes, spec.model.image or "",
                              env_id):
                client.apply(obj)
    finally:
        client.close()


@pytest.fixture
def kube_proxy(kube_api: KubeAPI) -> Iterator[CountingProxy]:
    with CountingProxy(kube_api.url) as proxy:
        yield proxy


def test_heartbeat_over_100_deployments_is_one_list_per_kind_and_no_write(
        kube_api: KubeAPI, kube_proxy: CountingProxy, shared_control_plane: ControlPlaneServer,
        tmp_path: Path) -> None:
    env_id, token = shared_control_plane.create_environment()
    create_managed_deployments(kube_api.kubeconfig, DEPLOYMENTS, env_id)
    settings = agent_settings(kubeconfig_via(kube_proxy, kube_api.kubeconfig,
                                             tmp_path / "kubeconfig"),
                              cp_url="", env_id=env_id, token=token)
    with CountingProxy(shared_control_plane.url) as cp_proxy:
        settings.control_plane.url = cp_proxy.url
        plugin = KubernetesPlugin(settings)
        control_plane = NativeControlPlane(settings)
        kube_proxy.reset()
        # one idle poll (nothing pending) + one heartbeat, exactly as the daemon does them
        assert Runtime(settings, control_plane, plugin).run(once=True) == 0
        cp_calls = [(s.method, s.path.split("?")[0].rsplit("/", 1)[-1])
                    for s in cp_proxy.snapshot()]

    kube = kube_proxy.kube_counts()
    assert kube == Counter({("list", "deployments.apps"): 1, ("list", "pods"): 1}), kube
    assert not kube_proxy.writes()
    assert cp_calls == [("GET", "actions"), ("GET", "deployments"), ("PUT", "heartbeat")]
    status = shared_control_plane.admin.get_environment(env_id)["last_heartbeat"]
    assert len(status["deployments"]) == DEPLOYMENTS


def test_idle_daemon_polls_cost_one_request_each(
        kube_api: KubeAPI, kube_proxy: CountingProxy, shared_control_plane: ControlPlaneServer,
        tmp_path: Path) -> None:
    env_id, token = shared_control_plane.create_environment()
    create_managed_deployments(kube_api.kubeconfig, 10, env_id)
    settings = agent_settings(kubeconfig_via(kube_proxy, kube_api.kubeconfig,
                                             tmp_path / "kubeconfig"),
                              env_id=env_id, token=token)
    with CountingProxy(shared_control_plane.url) as cp_proxy:
        settings.control_plane.url = cp_proxy.url
        runtime = Runtime(settings, NativeControlPlane(settings), KubernetesPlugin(settings))
        kube_proxy.reset()
        thread = threading.Thread(target=runtime.run)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while runtime.metrics.polls._value.get() < 8 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            runtime.request_stop()
            thread.join(timeout=30)
        calls = Counter(s.path.split("?")[0].rsplit("/", 1)[-1] for s in cp_proxy.snapshot())
    polls = int(runtime.metrics.polls._value.get())
    assert polls >= 8
    heartbeats = calls["heartbeat"]
    assert calls == Counter({"actions": polls, "deployments": heartbeats,
                             "heartbeat": heartbeats}), calls
    kube = kube_proxy.kube_counts()
    assert set(kube) <= {("list", "deployments.apps"), ("list", "pods")}, kube
    assert kube[("list", "deployments.apps")] == kube[("list", "pods")] == heartbeats
    assert not kube_proxy.writes()


def test_qps_and_burst_come_from_settings_and_bound_every_window(
        kube_api: KubeAPI, kube_proxy: CountingProxy, tmp_path: Path) -> None:
    qps, burst, requests = 10.0, 3, 18
    settings = agent_settings(kubeconfig_via(kube_proxy, kube_api.kubeconfig,
                                             tmp_path / "kubeconfig"), qps=qps, burst=burst)
    plugin = KubernetesPlugin(settings)
    try:
        kube_proxy.reset()
        workers = [threading.Thread(target=lambda: [plugin.client.list("v1", "Pod")
                                                    for _ in range(requests // 3)])
                   for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        plugin.close()
    stamps = sorted(s.at for s in kube_proxy.snapshot())
    assert len(stamps) == requests
    # token bucket: any n consecutive requests span at least (n - burst) / qps seconds;
    # 50 ms of slack for the proxy recording a little after the client sent
    for i in range(len(stamps)):
        for j in range(i + burst, len(stamps)):
            n = j - i + 1
            assert stamps[j] - stamps[i] >= (n - burst) / qps - 0.05, (n, stamps[j] - stamps[i])

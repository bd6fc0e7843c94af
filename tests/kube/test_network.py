"""Pod networking of the stand-in on the harness: what a real cluster's network gives a pod.

Each pod has a network namespace and an address of its own, so an unmodified
server on a fixed port runs in two replicas and is reached by probes, its
Service and the nginx ingress at the pod addresses; pods reach the harness
servers at the harness address, like the host does; and `tools/harness down`
leaves no interface, namespace or firewall rule behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import KubeAPI
from tools.harnesslib.layout import ROOT, Layout
from tools.harnesslib.netns import PodNetwork, leftovers
from tools.kube.controllers.client import KubeClient
from tools.kube.controllers.testing import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The harness cluster's variables (fails under CI=true when it is down, else skips)."""
    return require(harness_vars(), "HARNESS_BASE_IMAGE", "HARNESS_INGRESS_URL", "HARNESS_HOST")


@pytest.fixture()
def ns(kube: KubeAPI, env: dict[str, str]) -> Iterator[str]:
    name = kube.namespace("net")
    yield name
    KubeClient(str(kube.kubeconfig)).delete("namespaces", None, name)


def kubectl(kube: KubeAPI, *args: str, stdin: str | None = None) -> str:
    kubectl_bin = os.environ.get("HARNESS_KUBECTL") or str(Layout.default().bin / "kubectl")
    proc = subprocess.run([kubectl_bin, *args], input=stdin, capture_output=True, text=True,
                          timeout=200, env=kube.env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def http_get(url: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


def test_unmodified_server_on_a_fixed_port_serves_through_its_ingress_route(
        kube: KubeAPI, env: dict[str, str], ns: str) -> None:
    """`python3 -m http.server 8080` (the base image, nothing changed), two replicas on the
    same port: both become Ready and the ingress route of their Service answers."""
    host = f"{ns}.web.test"
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "terminationGracePeriodSeconds": 1,
                      "containers": [{
                          "name": "web", "image": env["HARNESS_BASE_IMAGE"],
                          "command": ["python3", "-m", "http.server", "8080"],
                          "workingDir": "/etc",
                          "ports": [{"name": "http", "containerPort": 8080}],
                          "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                             "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
         "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
             {"path": "/", "pathType": "Prefix", "backend": {"service": {
                 "name": "web", "port": {"number": 80}}}}]}}]}},
    ]
    for doc in manifests:
        kubectl(kube, "apply", "-n", ns, "-f", "-", stdin=json.dumps(doc))
    kubectl(kube, "rollout", "status", "-n", ns, "deploy/web", "--timeout=180s")

    client = KubeClient(str(kube.kubeconfig))
    pods = client.list("pods", ns, "app=web")["items"]
    ips = sorted(p["status"]["podIP"] for p in pods)
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    assert len(set(ips)) == 2 and "127.0.0.1" not in ips, ips
    assert all(any(c["type"] == "Ready" and c["status"] == "True"
                   for c in p["status"].get("conditions", [])) for p in pods)
    def addresses() -> list[str]:
        ep = client.get("endpoints", ns, "web") or {}
        return sorted(f"{a['ip']}:{s['ports'][0]['port']}" for s in ep.get("subsets") or []
                      for a in s.get("addresses") or [])

    # the Endpoints controller follows the pods on its own: await it, don't sample it
    wait_for(lambda: addresses() == [f"{ip}:8080" for ip in ips], 30,
             what=f"endpoints {[f'{ip}:8080' for ip in ips]}, have {addresses()}")
    url = f"{env['HARNESS_INGRESS_URL']}/passwd"
    # /etc/passwd served by http.server; awaited, since a 1 s readiness probe on a loaded
    # 2-core machine can take a pod out of the Endpoints for a moment (503), as on a cluster
    def served() -> bool:
        status, body = http_get(url, host)
        return status == 200 and "root:" in body

    wait_for(served, 30, what="/etc/passwd through the ingress")


def test_pods_reach_the_harness_servers_at_the_harness_address(
        kube: KubeAPI, env: dict[str, str], ns: str) -> None:
    """The addresses in .harness/env (registry, API server) work from inside a pod."""
    script = ("import sys, urllib.request\n"
              "for url in sys.argv[1:]:\n"
              "    with urllib.request.urlopen(url, timeout=10) as r:\n"
              "        print(url, r.status, flush=True)\n")
    urls = [f"http://{env['HARNESS_REGISTRY']}/v2/", f"{env['HARNESS_KUBE_URL']}/version"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "c", "image": env["HARNESS_BASE_IMAGE"],
               "command": ["python3", "-c", script, *urls]}]}}
    kubectl(kube, "apply", "-n", ns, "-f", "-", stdin=json.dumps(pod))
    client = KubeClient(str(kube.kubeconfig))
    def finished() -> dict[str, Any] | None:
        pod = client.get("pods", ns, "probe") or {}
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    done = wait_for(finished, 120, what="the probe pod to finish") or {}
    logs = kubectl(kube, "logs", "-n", ns, "probe")
    assert done["status"]["phase"] == "Succeeded", logs
    assert logs.split("\n")[:2] == [f"{u} 200" for u in urls]


def test_harness_down_leaves_no_interface_namespace_or_rule(
        env: dict[str, str], tmp_path: Path) -> None:
    """A second harness (own HARNESS_DIR: its own bridge and subnet) runs a pod, then
    `tools/harness down` removes its bridge, veths and pod namespaces; no firewall rule
    mentions them."""
    real = Layout.default()
    layout = Layout(tmp_path / "h")
    for tool in ("helm", "kubectl"):  # no second npm download
        shutil.copy2(real.bin / tool, layout.bin / tool)
    net = layout.network()
    ours = real.network()
    assert (net.bridge, net.subnet) != (ours.bridge, ours.subnet)
    harness = {**os.environ, "HARNESS_DIR": str(layout.dir), "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tools.harnesslib", *args], cwd=ROOT,
                              env=harness, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    try:
        run("up", "--only", "kube")
        kubeconfig = layout.conf("kube") / "kubeconfig"
        client = KubeClient(str(kubeconfig))
        client.create("pods", "default", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": env["HARNESS_BASE_IMAGE"],
                                     "command": ["sleep", "600"]}]}})
        def running() -> dict[str, Any] | None:
            pod = client.get("pods", "default", "p") or {}
            return pod if pod.get("status", {}).get("phase") == "Running" else None

        pod = wait_for(running, 120, what="pod running") or {}
        assert pod["status"]["podIP"].rsplit(".", 1)[0] == net.subnet.rsplit(".", 1)[0]
        assert net.exists() and net.namespaces() and len(net.links()) >= 2
        output = run("down")
    finally:
        subprocess.run([sys.executable, "-m", "tools.harnesslib", "down"], cwd=ROOT,
                       env=harness, capture_output=True, timeout=300)
    assert "network: removed" in output
    assert leftovers(net) == []
    assert leftovers(PodNetwork(net.id, net.subnet)) == []
    assert ours.exists()  # the other harness's network is untouched

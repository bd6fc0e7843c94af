"""The stand-in launcher killed (SIGKILL) and restarted on the same state dir.

The new node removes the old run's containers and runs the persisted pods
again, the ingress controller replaces the old nginx on the same port, and a
clean stop leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import urllib.request

import pytest

from tools.harnesslib.netns import PodNetwork, leftovers
from tools.kube.controllers.testing import (
    StandinCluster,
    server_deployment,
    service,
    wait_for,
)

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_restart_after_sigkill_recovers_and_cleans_up(env: dict[str, str]) -> None:
    state = tempfile.mkdtemp(prefix="kube-standin-restart-")
    cluster_env = {"HARNESS_CA_CERT": env.get("HARNESS_CA_CERT", ""),
                   "KUBE_STANDIN_INGRESS_PORT": str(_free_port())}
    first = StandinCluster(state_dir=state, env=cluster_env).start()
    second = None
    try:
        first.apply([server_deployment("d", env["HARNESS_BASE_IMAGE"], "x"), service("d"),
                     {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                      "metadata": {"name": "d"},
                      "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
                          {"path": "/d", "pathType": "Prefix", "backend": {"service": {
                              "name": "d", "port": {"number": 80}}}}]}}]}}])
        first.kubectl("rollout", "status", "deploy/d", "--timeout=120s")
        url = first.ingress_url
        wait_for(lambda: urllib.request.urlopen(url + "/d").read() == b"x /d\n", 30)
        old = first.podman_ps("{{.ID}}")
        assert len(old) == 1
        assert first.proc is not None
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        first.proc = None

        second = StandinCluster(state_dir=state, env=cluster_env).start()
        assert second.ingress_url == url
        restarted = second
        wait_for(lambda: restarted.podman_ps("{{.ID}}") not in ([], old), 60,
                 what="old container replaced by a new one")
        wait_for(lambda: [p for p in second.pods("default", "app=d")
                          if (p.get("status") or {}).get("podIP")], 60)
        wait_for(lambda: urllib.request.urlopen(url + "/d").read() == b"x /d\n", 60,
                 what="answer after restart")
    finally:
        if second is not None:
            second.stop()
        first.stop()
        left = (second or first).podman_ps()
        nginx_left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline_has(p, state)]
        # a node without a harness network makes its own (keyed on the state dir): gone too
        net_left = leftovers(PodNetwork.for_key(os.path.abspath(state)))
        shutil.rmtree(state, ignore_errors=True)
    assert left == []
    assert nginx_left == []
    assert net_left == []


def _cmdline_has(pid: str, text: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return text.encode() in fh.read()
    except OSError:
        return False

"""Test helpers: a stand-in cluster (API server + controllers) in a subprocess.

Used by tests/kube/test_controllers_*.py and tests/e2e/test_e2e_standin_smoke.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .client import KubeClient
from .runtime import REPO_ROOT, Podman

T = TypeVar("T")


def harness_env() -> dict[str, str] | None:
    """The variables of ``.harness/env`` (None when the harness is not up)."""
    path = Path(os.environ.get("HARNESS_DIR", os.path.join(REPO_ROOT, ".harness"))) / "env"
    if not path.exists():
        return None
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().strip("'\"")
    return out


def wait_for(fn: Callable[[], T], timeout: float = 60, interval: float = 0.25,
             what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies (a killed pytest leaves no cluster)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class StandinCluster:
    """``python -m tools.kube serve`` with controllers, in its own state dir."""

    def __init__(self, state_dir: str | None = None, env: dict[str, str] | None = None) -> None:
        self._tmp = None if state_dir else tempfile.mkdtemp(prefix="kube-standin-")
        self.state_dir = state_dir or self._tmp or ""
        self.kubeconfig = os.path.join(self.state_dir, "kubeconfig")
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ingress_url = ""
        self.client: KubeClient

    def start(self) -> StandinCluster:
        os.makedirs(self.state_dir, exist_ok=True)
        self.log_path = os.path.join(self.state_dir, "standin.log")
        for stale in (self.kubeconfig, os.path.join(self.state_dir, "ingress-url")):
            if os.path.exists(stale):
                os.unlink(stale)
        logfh = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.kube", "serve", "--host", "127.0.0.1", "--port", "0",
             "--state-dir", self.state_dir, "--kubeconfig-out", self.kubeconfig],
            cwd=REPO_ROOT, stdout=logfh, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True, preexec_fn=_die_with_parent)
        logfh.close()
        wait_for(lambda: os.path.exists(self.kubeconfig) and "READY" in self.log(), 30,
                 what="the API server")
        self.client = KubeClient(self.kubeconfig)
        self.url = self.client.server
        url_file = os.path.join(self.state_dir, "ingress-url")
        wait_for(lambda: os.path.exists(url_file) and Path(url_file).read_text().strip(), 30,
                 what="the ingress controller")
        with open(url_file, encoding="utf-8") as fh:
            self.ingress_url = fh.read().strip()
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = harness_env() or {}
        kubectl = env.get("HARNESS_KUBECTL") or "kubectl"
        if not os.path.exists(kubectl):
            kubectl = "kubectl"
        res = subprocess.run([kubectl, "--kubeconfig", self.kubeconfig, *args], input=input,
                             capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}{res.stdout}")
        return res

    def apply(self, docs: list[dict[str, Any]] | str, namespace: str = "default") -> None:
        # one JSON document per call: no YAML 1.1 surprises ("N" -> false) in kubectl
        texts = [docs] if isinstance(docs, str) else [json.dumps(d) for d in docs]
        for text in texts:
            self.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def podman_ps(self, fmt: str = "{{.Names}}") -> list[str]:
        """Containers (running or not) in the node's podman storage."""
        res = Podman(self.state_dir).run("ps", "-a", "--format", fmt)
        return res.stdout.split()

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.client.get("pods", namespace, name)

    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return list(self.client.list("pods", namespace, selector).get("items") or [])

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.client.list("events", namespace).get("items") or [])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        """Remove the temporary state dir (images included) unless KUBE_STANDIN_KEEP=1."""
        if self._tmp and not os.environ.get("KUBE_STANDIN_KEEP"):
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> StandinCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dump_debug(cluster: StandinCluster, namespace: str) -> str:
    """Pods, events and the server log, for assertion messages."""
    out = [json.dumps([{"name": p["metadata"]["name"], "status": p.get("status")}
                       for p in cluster.pods(namespace)], indent=1)[:6000]]
    out += [f"{e.get('reason')}: {e.get('message')}" for e in cluster.events(namespace)][-40:]
    out.append(cluster.log()[-4000:])
    return "\n".join(out)


# The tests' fake model server (tests/fixtures/model_server.py): listens on 0.0.0.0:8080,
# answers "<MSG> <path>", becomes ready (GET /ready -> 200) DELAY seconds after start.
SERVER_PY = (Path(__file__).resolve().parents[3] / "tests" / "fixtures" /
             "model_server.py").read_text()


def server_deployment(name: str, image: str, msg: str = "v1", replicas: int = 1,
                      delay: float = 0, **spec_extra: Any) -> dict[str, Any]:
    """A Deployment running SERVER_PY with a readiness probe on /ready."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": name}},
            **spec_extra,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                    "name": "server", "image": image,
                    "command": ["python3", "-u", "-c", SERVER_PY],
                    "env": [{"name": "MSG", "value": msg},
                            {"name": "DELAY", "value": str(delay)}],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                       "periodSeconds": 1},
                }]},
            },
        },
    }


def service(name: str, port: int = 80) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}

"""Shared pieces of the bench scripts: real servers, counting proxies, the agent process.

Every bench runs real processes: the reference control plane
(`management-agent control-plane serve`), the Kubernetes API stand-in
(`python -m tools.kube serve --no-controllers --in-memory`: a private one, so
that no pod is started for hundreds of deployments), and the agent itself
(`management-agent run`). A `CountingProxy` (tests/integration/ha/
counting_proxy.py) sits in front of the control plane and of the Kubernetes
API and records every request the agent makes. With no controllers, a
`RolloutWriter` plays the Deployment controller's status half (it marks each
new generation available through the status subresource, on a watch), so a
rollout completes as soon as the objects are applied.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.agent_process import set_dotted  # noqa: E402
from tests.fixtures.controlplane import ControlPlaneServer, free_port  # noqa: E402
from tests.integration.ha.counting_proxy import CountingProxy  # noqa: E402

__all__ = ["ROOT", "AgentProcess", "ControlPlaneServer", "CountingProxy", "RolloutWriter",
           "StandIn", "free_port", "machine", "percentile", "print_table"]

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _agent_command() -> list[str]:
    script = Path(sys.executable).with_name("management-agent")
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]


def harness_env() -> dict[str, str]:
    """`.harness/env` as a dict (empty when `tools/harness up` has not run)."""
    path = ROOT / ".harness" / "env"
    env: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                env[key.strip()] = value.strip()
    return env


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPU ({cpu}), "
            f"{mem:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}")


def percentile(values: Sequence[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "max": max(values) if values else float("nan"),
            "mean": statistics.fmean(values) if values else float("nan")}


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A Markdown table (pastes into docs/performance.md as is)."""
    def cell(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in lines:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def iso_seconds(stamp: str | None) -> float:
    """Unix time of an ISO timestamp from the control plane."""
    if not stamp:
        return float("nan")
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class StandIn:
    """A private Kubernetes API stand-in process (no controllers, in memory)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "kube.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.kube", "serve", "--host", "127.0.0.1",
                 "--port", "0", "--state-dir", str(workdir / "state"), "--kubeconfig-out",
                 str(self.kubeconfig), "--no-controllers", "--in-memory"],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"stand-in did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = line.split()[1]

    def kubeconfig_via(self, url: str, dest: Path) -> Path:
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = url
        dest.write_text(yaml.safe_dump(config))
        return dest

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def kube_client(kubeconfig: Path, namespace: str = "default", qps: float = 1000,
                burst: int = 1000) -> Any:
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    return KubeClient(KubernetesSettings(kubeconfig=kubeconfig, namespace=namespace, qps=qps,
                                         burst=burst))


class RolloutWriter:
    """The Deployment controller's status half, on a watch: every new generation is available."""

    def __init__(self, kubeconfig: Path, namespace: str = "default") -> None:
        self.client = kube_client(kubeconfig, namespace)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="rollout-writer")
        self.thread.start()

    def _run(self) -> None:
        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    listing = self.client.request("GET", self.client.path("apps/v1",
                                                                          "Deployment"))
                    for dep in listing.get("items") or []:
                        self._complete(dep)
                    version = listing["metadata"]["resourceVersion"]
                for event in self.client.watch("apps/v1", "Deployment",
                                               resource_version=version, timeout_seconds=5):
                    obj = event.get("object") or {}
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._complete(obj)
                    if self.stopped.is_set():
                        return
            except Exception:
                version = None
                time.sleep(0.2)

    def _complete(self, dep: dict[str, Any]) -> None:
        generation = dep["metadata"].get("generation", 1)
        if (dep.get("status") or {}).get("observedGeneration") == generation:
            return
        replicas = dep["spec"].get("replicas", 1)
        self.client.request(
            "PATCH", self.client.path("apps/v1", "Deployment", dep["metadata"]["name"],
                                      subresource="status"),
            body={"status": {"observedGeneration": generation, "replicas": replicas,
                             "updatedReplicas": replicas, "readyReplicas": replicas,
                             "availableReplicas": replicas}},
            content_type="application/merge-patch+json")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        self.client.close()


class AgentProcess:
    """`management-agent run` with the kubernetes plugin; CPU and memory from /proc."""

    def __init__(self, workdir: Path, cp_url: str, env_id: str, token: str,
                 kubeconfig: Path, **overrides: Any) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.health_port = free_port()
        (workdir / "token").write_text(token)
        config: dict[str, Any] = {
            "control_plane": {"url": cp_url, "environment_id": env_id,
                              "token_file": str(workdir / "token")},
            "health": {"host": "127.0.0.1", "port": self.health_port},
            "logging": {"level": "WARNING"},
            "images": {"builder": "none"},
            "plugin": {"name": "kubernetes", "kubernetes": {
                "kubeconfig": str(kubeconfig), "namespace": "default",
                "outfacing_url_root": "http://models.example.com/",
                "default_server_profile": "custom", "poll_interval_seconds": 0.2}},
        }
        set_dotted(config, overrides)
        self.config = workdir / "agent.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "agent.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([*_agent_command(), "run", "--config",
                                             str(self.config)],
                                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self, timeout: float = 60) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log_path.read_text()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.health_port}/readyz"
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"agent not ready: {self.log_path.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        values = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Servers:
    """Control plane + stand-in + a counting proxy in front of each; `close()` stops all."""

    def __init__(self, lease_seconds: int = 120) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mgmt-bench-"))
        self.cp = ControlPlaneServer(self.tmp / "cp", lease_seconds=lease_seconds)
        (self.tmp / "cp").mkdir()
        self.kube: StandIn | None = None
        self.cp_proxy: CountingProxy | None = None
        self.kube_proxy: CountingProxy | None = None
        self.writer: RolloutWriter | None = None
        try:
            self.cp.start()
            self.kube = StandIn(self.tmp / "kube")
            self.cp_proxy = CountingProxy(self.cp.url).__enter__()
            self.kube_proxy = CountingProxy(self.kube.url).__enter__()
            self.agent_kubeconfig = self.kube.kubeconfig_via(self.kube_proxy.url,
                                                             self.tmp / "agent-kubeconfig")
        except BaseException:
            self.close()
            raise

    def start_writer(self) -> RolloutWriter:
        assert self.kube is not None
        self.writer = RolloutWriter(self.kube.kubeconfig)
        return self.writer

    def close(self) -> None:
        for closer in (self.writer, self.cp_proxy, self.kube_proxy):
            if closer is not None:
                closer.close()
        if self.kube is not None:
            self.kube.stop()
        self.cp.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

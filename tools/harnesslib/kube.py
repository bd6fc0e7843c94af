"""The Kubernetes API stand-in + controllers (tools/kube, other owners), run in the background."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

from .base import Server
from .layout import ROOT
from .procs import http_answers

PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"  # the stand-in uses requests + yaml
INGRESS_FILE = "ingress-url"  # written by tools/kube/controllers/ingress.py once nginx runs


class Kube(Server):
    name = "kube"
    timeout = 60.0

    def available(self) -> str | None:
        if not (ROOT / "tools" / "kube" / "__main__.py").exists():
            return "tools/kube/__main__.py not there yet"
        if not PROJECT_PYTHON.exists():
            return "needs the project venv (.venv, `make venv`) for requests + yaml"
        return None

    @property
    def kubeconfig(self) -> Path:
        return self.layout.conf("kube") / "kubeconfig"

    @property
    def state_dir(self) -> Path:
        return self.layout.data("kube")

    def prepare(self) -> None:
        super().prepare()
        self.state.reserve("kube:ingress")
        for stale in (self.state_dir / INGRESS_FILE, self.kubeconfig):  # from the last run
            stale.unlink(missing_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [str(PROJECT_PYTHON), "-m", "tools.kube", "serve", "--host", self.host,
                "--port", str(self.port), "--state-dir", str(self.state_dir),
                "--kubeconfig-out", str(self.kubeconfig)]
        env = {**_read_env(self.layout.env_file),  # the other servers (started before kube)
               "PYTHONPATH": str(ROOT), "HARNESS_DIR": str(self.layout.dir),
               "KUBE_STANDIN_INGRESS_PORT": str(self.state.port("kube:ingress")),
               "KUBE_STANDIN_POD_NETWORK": self.layout.network().env(),
               # the ingress on the harness address too: the same URL on the host and in pods
               "KUBE_STANDIN_INGRESS_HOST": self.host,
               "PATH": f"{self.layout.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        if "HARNESS_REGISTRY" in env:
            env["KUBE_STANDIN_INSECURE_REGISTRIES"] = env["HARNESS_REGISTRY"]
        return argv, env

    def ready(self) -> bool:
        return self.kubeconfig.exists() and http_answers(f"http://{self.hostport}/version")

    def ingress_url(self, wait: float = 0.0) -> str | None:
        path = self.state_dir / INGRESS_FILE
        deadline = time.monotonic() + wait
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return path.read_text().strip() if path.exists() else None

    def after_start(self) -> None:
        self.ingress_url(wait=15.0)

    def exports(self) -> dict[str, str]:
        values = {"HARNESS_KUBECONFIG": str(self.kubeconfig),
                  "HARNESS_KUBE_URL": f"http://{self.hostport}"}
        url = self.ingress_url()
        if url:
            values["HARNESS_INGRESS_URL"] = url
        return values


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key] = shlex.split(value)[0] if value else ""
    return values

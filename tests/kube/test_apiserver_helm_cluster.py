"""helm install --wait / helm test / kubectl rollout against the stand-in WITH controllers.

Needs the harness registry and base image (tools/harness up); skipped otherwise.
Slow (a podman-run pod), hence marked `slow`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.kube import require_binary
from tools.kube.controllers.testing import StandinCluster

pytestmark = pytest.mark.slow

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: hooks\nversion: 0.1.0\n",
    "values.yaml": "image: IMAGE\n",
    "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\n"
                         "data: {greeting: hello}\n",
    "templates/test.yaml": """
apiVersion: v1
kind: Pod
metadata:
  name: "{{ .Release.Name }}-test"
  annotations:
    "helm.sh/hook": test
    "helm.sh/hook-delete-policy": before-hook-creation
spec:
  restartPolicy: Never
  containers:
  - name: t
    image: {{ .Values.image | quote }}
    command: ["python3", "-c", "print('helm test ok')"]
""",
}


def test_helm_test_hook_pod_runs(cluster: StandinCluster, env: dict[str, str],
                                 tmp_path: Path) -> None:
    helm = require_binary("helm")
    for name, text in CHART.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text.replace("IMAGE", env["HARNESS_BASE_IMAGE"]))
    kubeconfig = cluster.kubeconfig  # type: ignore[attr-defined]
    home = tmp_path / "home"
    run_env = {**os.environ, "KUBECONFIG": kubeconfig, "HOME": str(home),
               "HELM_CACHE_HOME": str(home / "c"), "HELM_CONFIG_HOME": str(home / "f"),
               "HELM_DATA_HOME": str(home / "d")}

    def helm_run(*args: str) -> str:
        proc = subprocess.run([helm, *args], capture_output=True, text=True, env=run_env,
                              timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert "STATUS: deployed" in helm_run("install", "h1", str(tmp_path), "--wait",
                                          "--timeout", "60s")
    out = helm_run("test", "h1", "--logs", "--timeout", "120s")
    assert "Phase:          Succeeded" in out or "Phase: Succeeded" in out.replace("  ", " ")
    assert "helm test ok" in out
    helm_run("uninstall", "h1", "--wait")

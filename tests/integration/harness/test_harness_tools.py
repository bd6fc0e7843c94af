"""helm/kubectl binaries, the env file and the harness command itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures.harness import ROOT

pytestmark = pytest.mark.integration


def test_helm_and_kubectl_versions(harness_env: dict[str, str]) -> None:
    helm = subprocess.run([harness_env["HARNESS_HELM"], "version", "--short"],
                          capture_output=True, text=True, check=True)
    assert helm.stdout.startswith("v3.18.")
    kubectl = subprocess.run([harness_env["HARNESS_KUBECTL"], "version", "--client"],
                             capture_output=True, text=True, check=True)
    assert "v1.33." in kubectl.stdout


def test_env_file_is_sourceable(harness_env: dict[str, str]) -> None:
    env_file = Path(harness_env["HARNESS_DIR"]) / "env"
    shown = subprocess.run(["bash", "-c", 'set -eu; set -a; . "$1"; echo "$HARNESS_REGISTRY"',
                            "_", str(env_file)], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == harness_env["HARNESS_REGISTRY"]


def test_harness_status_and_env_commands(harness_env: dict[str, str]) -> None:
    status = subprocess.run([str(ROOT / "tools" / "harness"), "status"], capture_output=True,
                            text=True, timeout=60)
    assert status.returncode in (0, 3), status.stdout + status.stderr  # 3: some server stopped
    assert "registry        ready" in status.stdout
    env = subprocess.run([str(ROOT / "tools" / "harness"), "env"], capture_output=True,
                         text=True, check=True)
    assert f"HARNESS_REGISTRY={harness_env['HARNESS_REGISTRY']}" in env.stdout


def test_up_is_idempotent_and_keeps_running_servers(harness_env: dict[str, str]) -> None:
    pidfile = Path(harness_env["HARNESS_DIR"]) / "pids" / "registry.pid"
    before = pidfile.read_text()
    again = subprocess.run([str(ROOT / "tools" / "harness"), "up", "--only", "registry"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "(0 started, 1 kept)" in again.stderr
    assert pidfile.read_text() == before

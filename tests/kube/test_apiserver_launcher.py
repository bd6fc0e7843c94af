"""The launcher (`python -m tools.kube serve`) and persistence across restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.fixtures.kube import ROOT, start_kube_api


def test_state_survives_restart(tmp_path: Path) -> None:
    api = start_kube_api(tmp_path / "k")
    r = requests.post(f"{api.url}/api/v1/namespaces/default/configmaps", timeout=5, json={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}})
    rv = int(r.json()["metadata"]["resourceVersion"])
    api.server.shutdown_all()
    again = start_kube_api(tmp_path / "k")
    try:
        r = requests.get(f"{again.url}/api/v1/namespaces/default/configmaps/keep", timeout=5)
        assert r.status_code == 200
        r = requests.post(f"{again.url}/api/v1/namespaces/default/configmaps", timeout=5, json={
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "next"}})
        assert int(r.json()["metadata"]["resourceVersion"]) > rv
    finally:
        again.server.shutdown_all()


def test_launcher_writes_kubeconfig_and_stops_on_sigterm(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.kube", "serve", "--port", "0", "--state-dir",
         str(tmp_path / "state"), "--kubeconfig-out", str(kc), "--no-controllers"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        config = yaml.safe_load(kc.read_text())
        assert config["clusters"][0]["cluster"]["server"] == url
        assert config["users"][0]["user"]["token"]
        assert requests.get(f"{url}/version", timeout=5).json()["gitVersion"] == "v1.33.0"
        ns = requests.get(f"{url}/api/v1/namespaces/ingress-nginx", timeout=5)
        assert ns.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert (tmp_path / "state" / "state.json").exists()

"""The whole mission on the harness cluster.

reference control plane (deploy action) -> `management-agent run` with
plugin.name=kubernetes -> model image built by the direct builder FROM
HARNESS_BASE_IMAGE into HARNESS_REGISTRY -> Deployment/Service/Ingress on the
Kubernetes API stand-in -> pods (podman) serving the model -> a prediction
answered through the ingress URL -> status ready with that URL in the control
plane; then replace and stop through the control plane.

The model is a directory holding `model.json` (the answer) and `server.py` (the
tests' fake model server, tests/fixtures/model_server.py: it reads model.json
next to itself and listens on 0.0.0.0:8080, the profile's declared port).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fixtures import model_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODEL_PATH = "/opt/model"
ACTION_TIMEOUT = 420.0

SERVER = model_server.SOURCE  # copied into the model directory as server.py


def write_model(directory: Path, name: str, answer: float) -> str:
    directory.mkdir(parents=True)
    (directory / "server.py").write_text(SERVER)
    (directory / "model.json").write_text(json.dumps({"name": name, "answer": answer}))
    return f"file://{directory}"


class Agent:
    """`management-agent run` as a process, stopped by PID."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log_path = log_path
        command = Path(sys.executable).with_name("management-agent")
        argv = [str(command)] if command.exists() else [sys.executable, "-m", "agent.cli"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MGMT_AGENT_")}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen([*argv, "run", "-c", str(config)], stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def agent_config(path: Path, cluster: dict[str, str], cp_url: str, env_id: str,
                 token: str) -> Path:
    config: dict[str, Any] = {
        "control_plane": {"url": cp_url, "environment_id": env_id, "token": token,
                          "poll_interval_seconds": 0.5, "heartbeat_interval_seconds": 2},
        "health": {"enabled": False},
        "logging": {"level": "INFO"},
        "artifacts": {"file_roots": [str(path.parent)]},  # the models are file:// below it
        "images": {
            "builder": "direct",
            "generated_image_repository": f"{cluster['HARNESS_REGISTRY']}/e2e-models",
            "insecure_registries": [cluster["HARNESS_REGISTRY"]],
        },
        "plugin": {"name": "kubernetes", "kubernetes": {
            "kubeconfig": cluster["HARNESS_KUBECONFIG"],
            "namespace": cluster["NAMESPACE"],
            "outfacing_url_root": cluster["HARNESS_INGRESS_URL"].rstrip("/") + "/",
            "server_profiles": {"tiny": {
                "image": cluster["HARNESS_BASE_IMAGE"], "model_path": MODEL_PATH,
                "port": 8080, "health_path": "/health", "predict_path": "/predict",
                "command": ["python3", f"{MODEL_PATH}/server.py"],
            }},
            "default_server_profile": "tiny",
            # the base image has no USER (root): run it as a non-root UID, or a kubelet
            # refuses runAsNonRoot (CreateContainerConfigError)
            "security": {"run_as_user": 10001},
            "rollout_timeout_seconds": 240, "fail_fast_seconds": 30,
            "poll_interval_seconds": 1, "probe_public_url": True,
        }},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def predict(url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = requests.post(url, json={"instances": [[1, 2, 3]]}, timeout=5)
            if response.status_code == 200:
                return dict(response.json())
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"no prediction from {url}: {last}")


def test_control_plane_action_to_prediction_through_ingress(
        control_plane: Any, cluster: dict[str, str], tmp_path: Path) -> None:
    env_id, token = control_plane.create_environment()
    config = agent_config(tmp_path / "agent.yaml", cluster, control_plane.url, env_id, token)
    agent = Agent(config, tmp_path / "agent.log")
    admin = control_plane.admin
    try:
        uri = write_model(tmp_path / "model-v1", "tiny-v1", 2.0)
        action = control_plane.deploy(env_id, "e2e-dep", "tiny-v1", uri=uri)
        done = admin.wait_action(env_id, action["id"], timeout=ACTION_TIMEOUT)
        assert done["state"] == "completed", (done, agent.log())
        result = done["result"]
        assert result["state"] == "ready", (result, agent.log())
        assert result["status"] == "passing", result  # incl. the public health check
        url = result["data"]["predictionUrl"]
        ingress = cluster["HARNESS_INGRESS_URL"].rstrip("/")
        assert url == f"{ingress}/e2e-dep/predict"
        assert result["data"]["image"].startswith(f"{cluster['HARNESS_REGISTRY']}/e2e-models")
        assert predict(url) == {"predictions": [12.0], "model": "tiny-v1", "path": "/predict"}

        deployment = admin.get_deployment(env_id, "e2e-dep")
        assert deployment["state"] == "ready" and deployment["prediction_url"] == url
        assert deployment["current_model_id"] == "tiny-v1"

        uri2 = write_model(tmp_path / "model-v2", "tiny-v2", 10.0)
        replace = admin.replace(env_id, "e2e-dep", {"model": {"id": "tiny-v2", "uri": uri2}})
        replace_action = replace.get("action", replace)
        done = admin.wait_action(env_id, replace_action["id"], timeout=ACTION_TIMEOUT)
        assert done["result"]["state"] == "ready", (done, agent.log())
        assert done["result"]["data"]["currentModelId"] == "tiny-v2"
        assert predict(url) == {"predictions": [60.0], "model": "tiny-v2", "path": "/predict"}

        stop = admin.stop(env_id, "e2e-dep")
        stop_action = stop.get("action", stop)
        done = admin.wait_action(env_id, stop_action["id"], timeout=120)
        assert done["result"]["state"] == "stopped", (done, agent.log())
    except BaseException:
        print(f"\n----- agent log -----\n{agent.log()}")
        raise
    finally:
        agent.stop()

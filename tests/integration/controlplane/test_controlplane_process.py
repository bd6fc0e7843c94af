"""The reference control plane as a real process: restarts, racing agents, long poll, CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.controlplane.http import NativeControlPlane
from agent.errors import LeaseConflictError
from agent.model import ActionResult, DeploymentState, Event, Status
from tests.fixtures.controlplane import ControlPlaneServer, command, race_claims

pytestmark = pytest.mark.integration

PASSING = ActionResult(status=Status.PASSING, state=DeploymentState.READY)


def _agent(cp: ControlPlaneServer, env_id: str, token: str, name: str) -> NativeControlPlane:
    return NativeControlPlane(cp.agent_settings(env_id, token), agent_id=name)


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_loses_no_deployment_action_lease_or_event(
    control_plane: ControlPlaneServer, kill: bool
) -> None:
    env_id, token = control_plane.create_environment()
    start = control_plane.deploy(env_id, "d1")["id"]
    control_plane.deploy(env_id, "d2", image="registry.local/m2:1", model_id="m2")
    agent = _agent(control_plane, env_id, token, "agent-1")
    agent.claim(start, lease_seconds=600)
    agent.event(start, Event(message="fetching model"))
    stop = control_plane.admin.stop(env_id, "d2")["action"]["id"]

    control_plane.restart(kill=kill)

    assert {dep["id"] for dep in control_plane.admin.list_deployments(env_id)} == {"d1", "d2"}
    assert control_plane.admin.get_deployment(env_id, "d2")["desired"] == "stopped"
    pending = [ref.id for ref in agent.pending()]
    assert start not in pending  # still leased after the restart
    assert stop not in pending  # still behind d2's start
    other = _agent(control_plane, env_id, token, "agent-2")
    with pytest.raises(LeaseConflictError):
        other.claim(start, lease_seconds=60)
    agent.complete(start, PASSING)
    messages = [event["message"] for event in control_plane.admin.events(env_id, "d1")]
    assert "fetching model" in messages
    assert control_plane.admin.get_deployment(env_id, "d1")["state"] == "ready"
    agent.close()
    other.close()


def test_exactly_one_of_many_racing_agents_wins_each_claim(
    shared_control_plane: ControlPlaneServer,
) -> None:
    cp = shared_control_plane
    env_id, token = cp.create_environment()
    action_ids = [cp.deploy(env_id, f"d{i}")["id"] for i in range(12)]
    agents = [_agent(cp, env_id, token, f"agent-{n}") for n in range(6)]
    winners = race_claims(agents, action_ids, timeout=30)
    assert all(len(names) == 1 for names in winners.values()), winners
    for action_id in action_ids:
        assert cp.admin.get_action(env_id, action_id)["attempt"] == 1
    for agent in agents:
        agent.close()


def test_long_poll_answers_as_soon_as_an_action_is_enqueued(
    shared_control_plane: ControlPlaneServer,
) -> None:
    cp = shared_control_plane
    env_id, token = cp.create_environment()
    agent = _agent(cp, env_id, token, "agent-1")
    timer = threading.Timer(1.0, lambda: cp.deploy(env_id, "d1"))
    started = time.monotonic()
    timer.start()
    refs = agent.pending(wait_seconds=20)
    elapsed = time.monotonic() - started
    timer.join()
    assert [ref.type for ref in refs] == ["deployment_start"]
    assert 0.9 < elapsed < 10
    agent.close()


def _cli_process(cp: ControlPlaneServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `management-agent control-plane ...` command."""
    env = {**os.environ, "MGMT_AGENT_CP_URL": cp.url, "MGMT_AGENT_CP_ADMIN_TOKEN": cp.admin_token}
    return subprocess.run([*command(), "control-plane", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def _cli(cp: ControlPlaneServer, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in-process (a process start costs seconds on a busy machine)."""
    from agent.cli import main

    out, err = io.StringIO(), io.StringIO()
    env = {"MGMT_AGENT_CP_URL": cp.url, "MGMT_AGENT_CP_ADMIN_TOKEN": cp.admin_token}
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        for key, value in env.items():
            patch.setenv(key, value)
        code = main(["control-plane", *args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_drives_a_deployment_through_the_admin_api(
    shared_control_plane: ControlPlaneServer, tmp_path: Path
) -> None:
    cp = shared_control_plane
    created = _cli_process(cp, "env-create", "cli-env", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["token"]

    deployed = _cli(cp, "deploy", "web", "-E", "cli-env", "--model-id", "m1",
                    "--model-uri", "s3://models/m1", "--replicas", "2", "--env", "A=1",
                    "--request", "cpu=100m", "--limit", "memory=1Gi", "--json")
    assert deployed.returncode == 0, deployed.stderr
    action_id = json.loads(deployed.stdout)["id"]
    spec = cp.admin.get_deployment("cli-env", "web")["spec"]
    assert spec["replicas"] == 2 and spec["env"] == {"A": "1"}
    assert spec["resources"] == {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}

    invalid = _cli(cp, "deploy", "Bad_Name", "-E", "cli-env", "--model-id", "m",
                   "--image", "x:1")
    assert invalid.returncode == 1
    assert "DNS-1123" in invalid.stderr

    agent = _agent(cp, "cli-env", token, "agent-1")
    agent.claim(action_id, lease_seconds=60)
    agent.complete(action_id, ActionResult.model_validate(
        {"status": "passing", "state": "ready", "data": {"predictionUrl": "http://h/web/p"}}))

    listed = _cli(cp, "list", "-E", "cli-env")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:4] == ["ID", "DESIRED", "STATE", "STATUS"]
    assert row.split()[:4] == ["web", "running", "ready", "passing"]
    assert "http://h/web/p" in row

    replaced = _cli(cp, "replace", "web", "-E", "cli-env", "--model-id", "m2",
                    "--image", "registry.local/m2:1")
    assert replaced.returncode == 0, replaced.stderr
    assert "deployment_replace_model" in replaced.stdout

    waited = _cli(cp, "stop", "web", "-E", "cli-env", "--wait", "0.5")
    assert waited.returncode == 1  # nobody runs the replacement, so the stop never completes
    assert "did not complete" in waited.stderr

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("model: {id: m3, uri: 'gs://models/m3'}\nreplicas: 3\n"
                         "autoscaling: {min_replicas: 3, max_replicas: 6}\n")
    from_file = _cli(cp, "deploy", "batch", "-E", "cli-env", "--spec-file", str(spec_file),
                     "--replicas", "4", "--server-profile", "mlserver", "--config", "gpu=true")
    assert from_file.returncode == 0, from_file.stderr
    spec = cp.admin.get_deployment("cli-env", "batch")["spec"]
    assert (spec["replicas"], spec["model"]["uri"], spec["autoscaling"]["max_replicas"]) == (
        4, "gs://models/m3", 6)
    assert (spec["server_profile"], spec["config"]) == ("mlserver", {"gpu": True})

    events = _cli(cp, "events", "web", "-E", "cli-env")
    assert f"deployment_start {action_id} completed passing/ready" in events.stdout
    envs = _cli(cp, "env-list", "--json")
    assert "cli-env" in [env["id"] for env in json.loads(envs.stdout)]
    agent.close()


def test_interactive_docs_and_openapi_are_served(shared_control_plane: ControlPlaneServer) -> None:
    cp = shared_control_plane
    assert requests.get(f"{cp.url}/docs", timeout=5).status_code == 200
    spec: dict[str, Any] = requests.get(f"{cp.url}/openapi.json", timeout=5).json()
    assert "/api/v1/environments/{env_id}/actions/{action_id}/claim" in spec["paths"]

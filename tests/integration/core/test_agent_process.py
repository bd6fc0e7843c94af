"""A real agent process against the real reference control plane process.

No mocked HTTP: the agent runs as `management-agent run` with the filesystem
plugin; faults are produced by stopping the control plane, killing the agent,
or putting `FaultyProxy` between them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fixtures.agent_process import AgentProcess, new_agent, wait_for
from tests.fixtures.controlplane import ControlPlaneServer, free_port
from tests.integration.core.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def environment(control_plane: ControlPlaneServer) -> tuple[str, str]:
    return control_plane.create_environment("it")


def test_deploy_replace_stop_round_trip(control_plane: ControlPlaneServer,
                                        environment: tuple[str, str], agents: list[AgentProcess],
                                        tmp_path: Path) -> None:
    env_id = environment[0]
    agent = new_agent(agents, tmp_path, control_plane.url, environment)
    control_plane.deploy(env_id, "iris", "iris-v1", uri="s3://models/iris/v1/", replicas=2)
    assert agent.run_once() == 0

    deployment = control_plane.admin.get_deployment(env_id, "iris")
    assert (deployment["state"], deployment["status"]) == ("ready", "passing")
    assert deployment["current_model_id"] == "iris-v1"
    assert deployment["prediction_url"].startswith("http://models.local/iris")
    manifests = list(yaml.safe_load_all((agent.output / "iris" / "manifests.yaml").read_text()))
    assert {obj["kind"] for obj in manifests} >= {"Deployment", "Service", "Ingress"}
    events = [e["message"] for e in control_plane.admin.events(env_id, "iris")]
    assert any("rendered" in message for message in events)

    control_plane.admin.replace(env_id, "iris", {"model": {"id": "iris-v2",
                                                           "uri": "s3://models/iris/v2/"}})
    assert agent.run_once() == 0
    assert control_plane.admin.get_deployment(env_id, "iris")["current_model_id"] == "iris-v2"
    state = json.loads((agent.output / "iris" / "state.json").read_text())
    assert state["model_id"] == "iris-v2"

    control_plane.admin.stop(env_id, "iris")
    assert agent.run_once() == 0
    assert control_plane.admin.get_deployment(env_id, "iris")["state"] == "stopped"
    assert not (agent.output / "iris").exists()


def test_daemon_survives_control_plane_restart_without_losing_actions(
        control_plane: ControlPlaneServer, environment: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    env_id = environment[0]
    agent = new_agent(agents, tmp_path, control_plane.url, environment).start()
    first = control_plane.deploy(env_id, "a", "m1")
    control_plane.admin.wait_action(env_id, first["id"], timeout=30)
    wait_for(lambda: agent.health("/readyz") == 200, what="agent ready")

    control_plane.stop()
    time.sleep(2)  # the agent polls into a closed port a few times
    assert agent.health("/healthz") == 200, "a short outage must not fail liveness"
    assert agent.process is not None and agent.process.poll() is None
    control_plane.start()  # same database, same port
    second = control_plane.deploy(env_id, "b", "m2")
    done = control_plane.admin.wait_action(env_id, second["id"], timeout=60)
    assert done["state"] == "completed" and done["result"]["status"] == "passing"
    assert control_plane.admin.get_deployment(env_id, "a")["state"] == "ready"
    log = agent.log()
    assert log.count("polling the control plane failing") == 1, "log once per state change"
    assert "polling the control plane recovered" in log


def test_agent_killed_mid_action_is_redelivered_and_completed_once(
        control_plane: ControlPlaneServer, environment: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    env_id = environment[0]
    agent = new_agent(agents, tmp_path, control_plane.url, environment,
                      plugin__filesystem__git={"enabled": True})
    # A pre-commit hook that blocks holds the action in the middle of its work.
    agent.output.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(agent.output)], check=True)
    hook = agent.output / ".git" / "hooks" / "pre-commit"
    marker = tmp_path / "in-hook"
    release = tmp_path / "release"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n"
                    f"while [ ! -e {release} ]; do sleep 0.1; done\nexit 1\n")
    hook.chmod(0o755)

    action = control_plane.deploy(env_id, "crashy", "m1")
    agent.start()
    wait_for(marker.exists, what="the action to reach the commit")
    assert agent.signal(signal.SIGKILL) == -signal.SIGKILL
    hook.unlink()
    release.touch()  # the orphaned git commit of the killed agent aborts
    assert control_plane.admin.get_action(env_id, action["id"])["state"] != "completed"

    restarted = new_agent(agents, tmp_path, control_plane.url, environment, name="agent",
                          plugin__filesystem__git={"enabled": True}).start()
    done = control_plane.admin.wait_action(env_id, action["id"], timeout=60)
    assert done["state"] == "completed" and done["result"]["status"] == "passing"
    assert done["attempt"] == 2
    completions = [e for e in control_plane.admin.events(env_id, "crashy")
                   if "completed" in e["message"]]
    assert len(completions) == 1
    commits = subprocess.run(["git", "-C", str(restarted.output), "log", "--oneline"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(commits) == 1 and "start crashy" in commits[0]


def test_agent_rides_out_500s_garbage_and_timeouts(control_plane: ControlPlaneServer,
                                                   environment: tuple[str, str],
                                                   agents: list[AgentProcess],
                                                   tmp_path: Path) -> None:
    env_id = environment[0]
    with FaultyProxy(control_plane.url) as proxy:
        agent = new_agent(agents, tmp_path, proxy.url, environment,
                          control_plane__timeout_seconds=1).start()
        wait_for(lambda: agent.health("/readyz") == 200, what="agent ready")
        for mode in ("500", "503", "garbage", "hang", "reset"):
            proxy.mode = mode
            served = proxy.faults_served
            wait_for(lambda served=served: proxy.faults_served > served + 1,
                     what=f"agent to meet {mode}")
            assert agent.health("/healthz") == 200
        action = control_plane.deploy(env_id, "steady", "m1")
        time.sleep(1)
        assert control_plane.admin.get_action(env_id, action["id"])["state"] == "pending"
        proxy.mode = "pass"
        done = control_plane.admin.wait_action(env_id, action["id"], timeout=90)
        assert done["state"] == "completed" and done["result"]["status"] == "passing"
    assert agent.process is not None and agent.process.poll() is None
    assert environment[1] not in agent.log(), "the token never reaches the log"


@pytest.mark.control_plane(test_endpoints=True)
def test_malformed_actions_fail_clearly_and_the_agent_goes_on(
        control_plane: ControlPlaneServer, environment: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    env_id = environment[0]
    bad = {
        "unknown type": {"type": "deployment_explode", "deployment_id": "x1"},
        "missing spec": {"type": "deployment_start", "deployment_id": "x2"},
        "negative replicas": {"type": "deployment_start", "deployment_id": "x3",
                              "deployment": {"id": "x3", "model": {"id": "m"},
                                             "replicas": -2}},
        "bad name": {"type": "deployment_start", "deployment_id": "Not_A_Name",
                     "deployment": {"id": "Not_A_Name", "model": {"id": "m"}}},
        "bad uri": {"type": "deployment_start", "deployment_id": "x5",
                    "deployment": {"id": "x5", "model": {"id": "m", "uri": "nonsense"}}},
    }
    ids = {label: control_plane.admin.enqueue_raw(env_id, payload)["id"]
           for label, payload in bad.items()}
    good = control_plane.deploy(env_id, "fine", "m1")
    agent = new_agent(agents, tmp_path, control_plane.url, environment)
    assert agent.run_once() == 0
    expected = {"unknown type": "type", "missing spec": "needs a deployment spec",
                "negative replicas": "replicas", "bad name": "DNS-1123", "bad uri": "scheme"}
    for label, action_id in ids.items():
        action = control_plane.admin.get_action(env_id, action_id)
        assert action["state"] == "completed", label
        assert action["result"]["status"] == "failing", label
        assert expected[label] in action["result"]["data"]["message"], label
    assert control_plane.admin.get_action(env_id, good["id"])["result"]["status"] == "passing"


def test_sigterm_is_graceful_and_health_reports_shutdown(control_plane: ControlPlaneServer,
                                                         environment: tuple[str, str],
                                                         agents: list[AgentProcess],
                                                         tmp_path: Path) -> None:
    agent = new_agent(agents, tmp_path, control_plane.url, environment).start()
    wait_for(lambda: agent.health("/readyz") == 200, what="agent ready")
    metrics = requests.get(f"http://127.0.0.1:{agent.health_port}/metrics", timeout=2).text
    assert "management_agent_polls_total" in metrics
    assert agent.signal(signal.SIGTERM) == 0
    assert "agent stopped" in agent.log()


def test_exits_non_zero_when_control_plane_stays_unreachable(tmp_path: Path,
                                                             agents: list[AgentProcess]) -> None:
    agent = new_agent(agents, tmp_path, f"http://127.0.0.1:{free_port()}", ("e", "t"),
                      control_plane__max_consecutive_failures=3,
                      control_plane__poll_interval_seconds=0.1).start()
    assert agent.process is not None
    assert agent.process.wait(timeout=60) == 3
    assert "exiting so that Kubernetes restarts the agent" in agent.log()


def test_wrong_token_is_reported_not_retried_forever(control_plane: ControlPlaneServer,
                                                     environment: tuple[str, str],
                                                     agents: list[AgentProcess],
                                                     tmp_path: Path) -> None:
    agent = new_agent(agents, tmp_path, control_plane.url, (environment[0], "wrong-token"),
                      control_plane__max_consecutive_failures=3,
                      control_plane__poll_interval_seconds=0.1).start()
    assert agent.process is not None
    assert agent.process.wait(timeout=60) == 3
    assert "401" in agent.log()
    assert "wrong-token" not in agent.log()


def agent_stuck_in_commit(agents: list[AgentProcess], tmp_path: Path,
                          control_plane: ControlPlaneServer, environment: tuple[str, str],
                          grace_seconds: float, deployment_id: str
                          ) -> tuple[AgentProcess, dict[str, Any], Path]:
    """A running agent stuck in the git commit of a deploy of `deployment_id`, and that
    action; the commit ends (failing) once the returned path exists."""
    agent = new_agent(agents, tmp_path, control_plane.url, environment,
                      plugin__filesystem__git={"enabled": True},
                      runtime__shutdown_grace_seconds=grace_seconds)
    agent.output.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(agent.output)], check=True)
    marker, release = tmp_path / "in-hook", tmp_path / "release"
    hook = agent.output / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n"
                    f"while [ ! -e {release} ]; do sleep 0.1; done\nexit 1\n")
    hook.chmod(0o755)
    action = control_plane.deploy(environment[0], deployment_id, "m1")
    try:
        agent.start()
        wait_for(marker.exists, what="the action to reach the commit")
    except BaseException:
        release.touch()
        raise
    return agent, action, release


def test_sigterm_releases_an_action_that_outlives_the_grace_period(
        control_plane: ControlPlaneServer, environment: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    env_id = environment[0]
    agent, action, release = agent_stuck_in_commit(agents, tmp_path, control_plane,
                                                   environment, 1, "slow")
    try:
        started = time.monotonic()
        assert agent.signal(signal.SIGTERM) == 0
        assert time.monotonic() - started < 15, "shutdown must end soon after the grace period"
    finally:
        release.touch()
    stored = control_plane.admin.get_action(env_id, action["id"])
    assert stored["state"] == "pending", "released, so another agent can take it at once"
    assert any("released" in e["message"] for e in control_plane.admin.events(env_id, "slow"))


def test_a_second_sigterm_forces_the_exit_without_waiting_for_in_flight_work(
        control_plane: ControlPlaneServer, environment: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    env_id = environment[0]
    agent, action, release = agent_stuck_in_commit(agents, tmp_path, control_plane,
                                                   environment, 600, "stuck")
    try:
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "in-flight action(s)" in agent.log(), what="the graceful wait")
        assert agent.process.poll() is None, "the first SIGTERM waits for the action"
        assert agent.signal(signal.SIGTERM) == 0  # well within the 600 s grace period
    finally:
        release.touch()
    assert "forced exit: 1 in-flight action(s) abandoned" in agent.log()
    stored = control_plane.admin.get_action(env_id, action["id"])
    assert stored["state"] != "completed", "abandoned: its lease expires, it is not released"

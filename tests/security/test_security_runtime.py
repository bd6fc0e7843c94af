"""The runtime under attack or abuse: a real agent process against the real reference
control plane process (issue 14, items 12, 13 and 14).

- A malformed entry in the pending list (injected in transit by `FaultyProxy`: the
  reference control plane normalises its own list, so only another implementation or
  a man in the middle can send one) must be reported as failing, not stop the agent.
- An action that kills the agent every time it runs must fail after
  `runtime.max_delivery_attempts`, not be redelivered forever.
- Workers stuck past the action timeout must show in `/healthz` and `/metrics`.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.agent_process import AgentProcess, wait_for
from tests.fixtures.controlplane import ControlPlaneServer
from tests.integration.core.faulty_proxy import FaultyProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def env(control_plane: ControlPlaneServer) -> tuple[str, str]:
    return control_plane.create_environment("sec")


def _agent(agents: list[AgentProcess], workdir: Path, url: str, env: tuple[str, str],
           **extra: Any) -> AgentProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    agent = AgentProcess(workdir, url, env[0], env[1], **extra)
    agents.append(agent)
    return agent


def _git_output_with_hook(agent: AgentProcess, hook: str) -> None:
    """The agent's GitOps output with a pre-commit hook: the hook runs in the middle of
    an action (after the manifests are written, before the commit)."""
    agent.output.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(agent.output)], check=True)
    path = agent.output / ".git" / "hooks" / "pre-commit"
    path.write_text(hook)
    path.chmod(0o755)


def _metric(agent: AgentProcess, name: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{agent.health_port}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def test_a_malformed_pending_entry_is_reported_failing_and_the_valid_one_runs(
        control_plane: ControlPlaneServer, env: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    """Before: one entry like {"id": 7} made the whole list unusable; the valid action next
    to it never ran and the agent exited with code 3 after its consecutive poll failures."""
    env_id = env[0]
    victim = control_plane.deploy(env_id, "victim", "m1")["id"]
    good = control_plane.deploy(env_id, "fine", "m1")["id"]

    def corrupt(method: str, path: str, body: bytes) -> bytes:
        if method != "GET" or not path.split("?")[0].endswith("/actions"):
            return body
        listed = json.loads(body)
        for entry in listed["actions"]:
            if entry["id"] == victim:
                entry["type"] = ["deployment_start"]  # not a string
        listed["actions"].insert(0, {"id": 7})  # no type, and an id the server does not know
        return json.dumps(listed).encode()

    with FaultyProxy(control_plane.url) as proxy:
        proxy.rewrite = corrupt
        agent = _agent(agents, tmp_path / "agent", proxy.url, env,
                       control_plane__max_consecutive_failures=2)
        assert agent.run_once() == 0

    done = control_plane.admin.get_action(env_id, good)
    assert done["state"] == "completed" and done["result"]["status"] == "passing"
    rejected = control_plane.admin.get_action(env_id, victim)
    assert rejected["state"] == "completed" and rejected["result"]["status"] == "failing"
    assert rejected["result"]["data"]["message"] == (
        "invalid action: listed entry does not validate: type: Input should be a valid string")
    assert not (agent.output / "victim").exists(), "the malformed entry never ran"
    assert "malformed pending entry skipped" in agent.log()
    assert "action '7' not found" in agent.log()


@pytest.mark.slow
def test_an_action_that_kills_the_agent_fails_after_max_delivery_attempts(
        control_plane: ControlPlaneServer, env: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    """Before: an action whose run killed the agent (OOM, disk full) was redelivered after
    every restart, forever, and its deployment's later actions never ran."""
    env_id = env[0]
    workdir, runs = tmp_path / "agent", tmp_path / "runs"
    extra: dict[str, Any] = {"plugin__filesystem__git": {"enabled": True},
                             "runtime__max_delivery_attempts": 2}
    first = _agent(agents, workdir, control_plane.url, env, **extra)
    # The hook kills the agent that runs it (git's parent), as an OOM kill would, after
    # checking it is this test's agent by its config path.
    _git_output_with_hook(first, f"""#!/bin/sh
echo run >> {runs}
agent=$(cut -d' ' -f4 /proc/$PPID/stat)
if tr '\\0' ' ' < /proc/$agent/cmdline | grep -q -- '{first.config}'; then kill -9 $agent; fi
exit 1
""")
    action = control_plane.deploy(env_id, "killer", "m1")["id"]

    for attempt in (1, 2):  # Kubernetes restarts the agent after each kill
        agent = first if attempt == 1 else _agent(agents, workdir, control_plane.url, env,
                                                  **extra)
        agent.start()
        assert agent.process is not None
        assert agent.process.wait(timeout=60) == -signal.SIGKILL
        assert runs.read_text().count("run") == attempt
    last = _agent(agents, workdir, control_plane.url, env, **extra).start()
    done = control_plane.admin.wait_action(env_id, action, timeout=60)  # the lease expires

    assert done["attempt"] == 3 and done["result"]["status"] == "failing"
    assert ("deployment_start not run again: this is delivery attempt 3 and "
            "runtime.max_delivery_attempts is 2") in done["result"]["data"]["message"]
    assert runs.read_text().count("run") == 2, "not run a third time"
    assert last.process is not None and last.process.poll() is None
    (workdir / "deployments" / ".git" / "hooks" / "pre-commit").unlink()
    stop = control_plane.admin.stop(env_id, "killer")["action"]["id"]
    after = control_plane.admin.wait_action(env_id, stop, timeout=60)
    assert after["result"]["status"] == "passing", "the deployment is no longer blocked"


def test_a_worker_stuck_past_the_action_timeout_fails_healthz_and_shows_in_metrics(
        control_plane: ControlPlaneServer, env: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    """Before: a plugin call that never returned held its worker forever while /healthz
    stayed 200 (the poll loop still ran), so Kubernetes never restarted the agent."""
    env_id = env[0]
    marker, release = tmp_path / "in-hook", tmp_path / "release"
    agent = _agent(agents, tmp_path / "agent", control_plane.url, env,
                   plugin__filesystem__git={"enabled": True}, runtime__workers=1,
                   runtime__action_timeout_seconds=2)
    _git_output_with_hook(agent, f"#!/bin/sh\ntouch {marker}\n"
                                 f"while [ ! -e {release} ]; do sleep 0.1; done\nexit 1\n")
    agent.start()
    wait_for(lambda: agent.health("/readyz") == 200, what="agent ready")
    assert _metric(agent, "management_agent_stuck_workers") == 0
    action = control_plane.deploy(env_id, "hangs", "m1")["id"]
    wait_for(marker.exists, what="the action to hang in the commit")

    wait_for(lambda: agent.health("/healthz") == 503, what="/healthz to fail")
    body = requests.get(f"http://127.0.0.1:{agent.health_port}/healthz", timeout=2).text
    assert body.startswith("all 1 worker(s) stuck past runtime.action_timeout_seconds: "
                           f"deployment_start {action} running for ")
    assert _metric(agent, "management_agent_stuck_workers") == 1
    reported = control_plane.admin.wait_action(env_id, action, timeout=30)
    assert "did not finish within 2s" in reported["result"]["data"]["message"]

    release.touch()  # the call returns: the worker is free again
    wait_for(lambda: agent.health("/healthz") == 200, what="/healthz to recover")
    assert _metric(agent, "management_agent_stuck_workers") == 0


@pytest.mark.control_plane(test_endpoints=True, max_body_bytes=4 * 1024 * 1024)
def test_a_huge_malformed_action_is_reported_with_a_bounded_message(
        control_plane: ControlPlaneServer, env: tuple[str, str],
        agents: list[AgentProcess], tmp_path: Path) -> None:
    """Before: every error of a payload with thousands of unknown fields went into the
    result message and the log line (megabytes from one crafted action)."""
    env_id = env[0]
    crafted = {"type": "deployment_stop", "deployment_id": "x1",
               **{f"field_{i}_{'x' * 200}": i for i in range(5000)}}
    action = control_plane.admin.enqueue_raw(env_id, crafted)["id"]
    agent = _agent(agents, tmp_path / "agent", control_plane.url, env)
    assert agent.run_once() == 0
    message = control_plane.admin.get_action(env_id, action)["result"]["data"]["message"]
    assert message.startswith(f"invalid action: action {action}: field_0_xxx")
    assert len(message) <= 1000 and message.endswith(" more characters)")
    assert len(agent.log()) < 20_000

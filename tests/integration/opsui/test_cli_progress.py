"""`control-plane deploy/replace/stop/relaunch/status --wait` and `events --follow` stream the
agent's events as they arrive: a real control plane process, a real agent process
(filesystem plugin), the CLI as a user runs it (a subprocess, stdout a pipe)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.controlplane import ControlPlaneServer, command

pytestmark = pytest.mark.integration


@pytest.fixture
def env(control_plane: ControlPlaneServer, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An environment served by a running filesystem agent; the CLI's environment variables."""
    env_id, token = control_plane.create_environment("ops")
    agent = AgentProcess(tmp_path, control_plane.url, env_id, token).start()
    variables = {**os.environ, "MGMT_AGENT_CP_URL": control_plane.url,
                 "MGMT_AGENT_CP_ADMIN_TOKEN": control_plane.admin_token,
                 "MGMT_AGENT_CP_ENVIRONMENT": env_id}
    try:
        yield env_id, variables
    finally:
        agent.stop()
        print(f"----- agent log -----\n{agent.log()[-4000:]}")


def cli(variables: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command(), "control-plane", *args], capture_output=True, text=True,
                          env=variables, timeout=120)


def test_wait_streams_events_then_the_result_and_exit_status(
        env: tuple[str, dict[str, str]]) -> None:
    _, variables = env
    deploy = cli(variables, "deploy", "iris", "--model-id", "iris-v1",
                 "--model-uri", "s3://models/iris/v1/", "--wait", "60")
    assert deploy.returncode == 0, deploy.stderr
    lines = deploy.stdout.splitlines()
    rendered = next(i for i, line in enumerate(lines) if "rendered" in line and "object(s)" in line)
    result = next(i for i, line in enumerate(lines) if line.startswith("result "))
    assert rendered < result  # the event streamed before the final summary
    assert "INFO" in lines[rendered]
    assert "passing/ready" in lines[result]
    assert any(line.startswith("prediction_url") and "http://models.local/" in line
               for line in lines)
    assert "\x1b" not in deploy.stdout and "\r" not in deploy.stdout  # a pipe: plain lines

    replace = cli(variables, "replace", "iris", "--model-id", "iris-v2",
                  "--model-uri", "s3://models/iris/v2/", "--wait", "60")
    assert replace.returncode == 0, replace.stderr
    assert "model replaced: iris-v1 -> iris-v2" in replace.stdout

    for verb in ("status", "relaunch", "stop"):
        done = cli(variables, verb, "iris", "--wait", "60")
        assert done.returncode == 0, (verb, done.stderr)
        assert "passing/" in done.stdout
    assert "passing/stopped" in done.stdout
    assert "removed" in done.stdout  # the stop's event


def test_wait_exits_non_zero_on_a_failing_action(env: tuple[str, dict[str, str]]) -> None:
    _, variables = env
    failed = cli(variables, "deploy", "bad", "--model-id", "m1", "--model-uri", "s3://models/m1/",
                 "--server-profile", "no-such-profile", "--wait", "60")
    assert failed.returncode == 1
    assert "failing/" in failed.stdout
    assert "no-such-profile" in failed.stdout


def _reader(stream: IO[str]) -> queue.Queue[str]:
    """Lines of `stream` from a thread, so that the test can wait with a deadline."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], seen: list[str], prefix: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting with {prefix!r} in {seen}")


def test_events_follow_prints_new_events_and_results_until_interrupted(
        control_plane: ControlPlaneServer, tmp_path: Path) -> None:
    env_id, token = control_plane.create_environment("follow")
    control_plane.deploy(env_id, "d1", uri="s3://models/m1/")
    variables = {**os.environ, "MGMT_AGENT_CP_URL": control_plane.url,
                 "MGMT_AGENT_CP_ADMIN_TOKEN": control_plane.admin_token,
                 "MGMT_AGENT_CP_ENVIRONMENT": env_id}
    # Ctrl-C as a terminal delivers it: a run started in the background of a script
    # (`cmd &` without job control) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt
    follower = subprocess.Popen([*command(), "control-plane", "events", "d1", "--follow"],
                                stdout=subprocess.PIPE, text=True, env=variables,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert follower.stdout is not None
    lines, seen = _reader(follower.stdout), []
    agent = AgentProcess(tmp_path, control_plane.url, env_id, token)
    try:
        _until(lines, seen, "-- following")  # the history is printed: now the agent may start
        agent.start()
        assert "passing/ready" in _until(lines, seen, "deployment_start d1:")
        control_plane.admin.stop(env_id, "d1")
        assert "passing/stopped" in _until(lines, seen, "deployment_stop d1:")
    finally:
        agent.stop()
        os.kill(follower.pid, signal.SIGINT)
        assert follower.wait(timeout=15) == 0
    assert any("rendered" in line for line in seen)

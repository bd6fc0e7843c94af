"""A first SIGTERM/SIGINT stops gracefully, a second forces the exit: the agent's handler
and the reference control plane's uvicorn server.

Real signals are raised in this process (handlers run in the main thread); the
previous handlers are restored after each test.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from agent.config import Settings
from agent.controlplane.server.app import ServerConfig, create_app
from agent.controlplane.server.cli import _server_class
from agent.daemon import install_signal_handlers
from agent.model import Action, ActionRef, ActionResult, DeploymentSpec, DeploymentState, Status
from agent.plugins.filesystem import FilesystemPlugin
from agent.runtime import Runtime


@pytest.fixture(autouse=True)
def restore_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class StopRecorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self) -> None:
        self.calls.append("stop")

    def force_stop(self) -> None:
        self.calls.append("force")


@pytest.mark.parametrize("signals", [(signal.SIGTERM, signal.SIGTERM),
                                     (signal.SIGINT, signal.SIGTERM),
                                     (signal.SIGTERM, signal.SIGINT)])
def test_the_agent_stops_on_the_first_signal_and_forces_on_the_second(
        signals: tuple[int, int]) -> None:
    runtime = StopRecorder()
    install_signal_handlers(runtime)  # type: ignore[arg-type]
    signal.raise_signal(signals[0])
    assert runtime.calls == ["stop"]
    signal.raise_signal(signals[1])
    assert runtime.calls == ["stop", "force"]


class BlockingPlugin(FilesystemPlugin):
    """`start` blocks until released: an action that outlives the grace period."""

    started = threading.Event()
    release = threading.Event()

    def start(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        self.started.set()
        self.release.wait(30)
        return ActionResult(status=Status.PASSING, state=DeploymentState.READY)


class OneActionControlPlane:
    """Offers one action until it is claimed; records releases and results (the real HTTP
    path of a forced exit is tests/integration/core/test_agent_process.py)."""

    def __init__(self) -> None:
        self.ref = ActionRef(id="a-1", type="deployment_start", deployment_id="dep-1")
        self.action = Action.model_validate({
            "id": "a-1", "type": "deployment_start", "environment_id": "e",
            "deployment_id": "dep-1",
            "deployment": {"id": "dep-1", "model": {"id": "m", "image": "r/m:1"}}})
        self.claimed = False
        self.released: list[str] = []
        self.completed: list[str] = []

    def pending(self, wait_seconds: float = 0.0) -> list[Any]:
        return [] if self.claimed else [self.ref]

    def claim(self, action_id: str, lease_seconds: int) -> Any:
        self.claimed = True
        return self.action

    def renew(self, action_id: str, lease_seconds: int) -> None: ...
    def event(self, action_id: str, event: Any) -> None: ...
    def heartbeat(self, status: Any) -> None: ...
    def close(self) -> None: ...

    def release(self, action_id: str) -> None:
        self.released.append(action_id)

    def complete(self, action_id: str, result: Any) -> None:
        self.completed.append(action_id)

    def known_deployment_ids(self) -> set[str] | None:
        return None


def test_a_forced_stop_abandons_in_flight_work_instead_of_waiting(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "control_plane": {"poll_interval_seconds": 0.05},
        "runtime": {"shutdown_grace_seconds": 600},
        "plugin": {"filesystem": {"output_dir": str(tmp_path)}}})
    cp, plugin = OneActionControlPlane(), BlockingPlugin(settings)
    runtime = Runtime(settings, cp, plugin)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        assert plugin.started.wait(10)
        runtime.request_stop()
        assert thread.is_alive()  # waiting (up to 600 s) for the action
        runtime.force_stop()
        thread.join(10)
        assert not thread.is_alive()
        assert cp.released == [] and cp.completed == []  # abandoned: its lease expires
    finally:
        plugin.release.set()
        # the abandoned worker logs its outcome: let it, before pytest closes the log capture
        for worker in runtime._threads:
            worker.join(10)


def test_the_control_plane_server_forces_the_exit_on_a_second_sigterm(tmp_path: Path) -> None:
    """uvicorn itself forces only on a second SIGINT; Kubernetes sends SIGTERM."""
    app = create_app(ServerConfig(db_path=tmp_path / "cp.db", admin_token="t"))
    server = _server_class(uvicorn.Server)(uvicorn.Config(app))
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit and not server.force_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.force_exit

"""`NativeControlPlane` against the real reference control plane, directly and through a
tiny faulty HTTP proxy (real sockets, scripted failures: 5xx, 429, garbage, dropped
connections) for the error mapping and retries."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.controlplane.http import NativeControlPlane
from agent.errors import (
    ControlPlaneError,
    InvalidActionError,
    LeaseConflictError,
    PermissionDeniedError,
)
from agent.model import (
    ActionResult,
    ActionType,
    DeploymentState,
    DeploymentStatus,
    EnvironmentStatus,
    Event,
    Status,
)
from tests.fixtures.controlplane import ControlPlaneServer

pytestmark = pytest.mark.integration


@dataclass
class Fault:
    """What the proxy answers instead of forwarding: a status, garbage, or a dropped socket."""

    status: int = 500
    body: bytes = b'{"error": "internal", "detail": "boom"}'
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


class FaultyProxy:
    """Forwards to the control plane unless a fault is queued; records request paths."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.paths: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy.paths.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.faults.pop(0) if proxy.faults else None
                if fault is not None and fault.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    status, payload, headers = fault.status, fault.body, fault.headers
                else:
                    answer = requests.request(
                        self.command, proxy.upstream + self.path, data=body, timeout=30,
                        headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                    )
                    status, payload = answer.status_code, answer.content
                    headers = {"Content-Type": answer.headers.get("Content-Type", "")}
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Setup:
    cp: ControlPlaneServer
    env_id: str
    token: str
    client: NativeControlPlane
    sleeps: list[float]


@pytest.fixture
def setup(shared_control_plane: ControlPlaneServer) -> Iterator[Setup]:
    cp = shared_control_plane
    env_id, token = cp.create_environment()
    sleeps: list[float] = []
    client = NativeControlPlane(cp.agent_settings(env_id, token), agent_id="agent-1",
                                sleep=sleeps.append)
    yield Setup(cp, env_id, token, client, sleeps)
    client.close()


@pytest.fixture
def proxied(setup: Setup) -> Iterator[tuple[Setup, FaultyProxy]]:
    proxy = FaultyProxy(setup.cp.url)
    client = NativeControlPlane(
        setup.cp.agent_settings(setup.env_id, setup.token, url=proxy.url, timeout_seconds=10),
        agent_id="agent-1", sleep=setup.sleeps.append,
    )
    yield Setup(setup.cp, setup.env_id, setup.token, client, setup.sleeps), proxy
    client.close()
    proxy.close()


def test_full_action_cycle(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cp, client = setup.cp, setup.client
    cp.deploy(setup.env_id, "d1", replicas=2)
    refs = client.pending()
    assert [(ref.type, ref.deployment_id) for ref in refs] == [("deployment_start", "d1")]
    action = client.claim(refs[0].id, lease_seconds=30)
    assert action.type is ActionType.DEPLOYMENT_START
    assert action.deployment is not None and action.deployment.replicas == 2
    assert action.attempt == 1 and action.environment_id == setup.env_id
    client.renew(action.id, lease_seconds=60)
    client.event(action.id, Event(message="image built", details={"image": "r/x:1"}))
    result = ActionResult.model_validate({"status": "passing", "state": "ready", "data": {
        "predictionUrl": "http://ingress/d1/predict", "image": "r/x:1", "currentModelId": "m1",
        "oldModelInUse": False, "message": "ready"}})
    client.complete(action.id, result)
    client.complete(action.id, result)  # repeating is harmless
    client.heartbeat(EnvironmentStatus(
        agent_version="0.1.0", plugin="kubernetes", status=Status.PASSING,
        deployments=[DeploymentStatus(deployment_id="d1", state=DeploymentState.READY,
                                      status=Status.PASSING, model_id="m1")],
        orphans=["stray"],
    ))
    assert client.known_deployment_ids() == {"d1"}
    assert client.pending() == []

    view = cp.admin.get_deployment(setup.env_id, "d1")
    assert (view["state"], view["prediction_url"]) == ("ready", "http://ingress/d1/predict")
    assert view["last_result"]["data"]["oldModelInUse"] is False
    assert cp.admin.get_environment(setup.env_id)["last_heartbeat"]["orphans"] == ["stray"]
    assert "image built" in [event["message"] for event in cp.admin.events(setup.env_id, "d1")]
    assert setup.token not in caplog.text


def test_release_makes_the_action_deliverable_again(setup: Setup) -> None:
    action_id = setup.cp.deploy(setup.env_id, "d1")["id"]
    setup.client.claim(action_id, lease_seconds=60)
    setup.client.release(action_id)
    setup.client.release(action_id)
    assert [ref.id for ref in setup.client.pending()] == [action_id]
    assert setup.client.claim(action_id, lease_seconds=60).attempt == 2


def test_lease_conflicts_raise_lease_conflict_error(setup: Setup) -> None:
    action_id = setup.cp.deploy(setup.env_id, "d1")["id"]
    setup.client.claim(action_id, lease_seconds=60)
    other = NativeControlPlane(setup.cp.agent_settings(setup.env_id, setup.token),
                               agent_id="agent-2")
    with pytest.raises(LeaseConflictError, match="leased by agent-1") as info:
        other.claim(action_id, lease_seconds=60)
    assert info.value.transient is False
    with pytest.raises(LeaseConflictError):
        other.renew(action_id, lease_seconds=60)
    setup.client.complete(action_id, ActionResult(status=Status.PASSING,
                                                  state=DeploymentState.READY))
    with pytest.raises(LeaseConflictError, match="already completed by agent-1"):
        other.complete(action_id, ActionResult(status=Status.FAILING,
                                               state=DeploymentState.ERRORED))
    other.close()


def test_malformed_action_raises_invalid_action_and_can_be_completed_failing(
    setup: Setup,
) -> None:
    raw = setup.cp.admin.enqueue_raw(setup.env_id, {
        "type": "deployment_start", "deployment_id": "d1",
        "deployment": {"id": "d1", "replicas": -1, "model": {"id": "m1", "uri": "s3://b/k"}},
    })
    [ref] = setup.client.pending()
    with pytest.raises(InvalidActionError) as info:
        setup.client.claim(ref.id, lease_seconds=60)
    assert info.value.action_id == raw["id"]
    assert str(info.value) == (
        f"action {raw['id']}: deployment.replicas: Input should be greater than or equal to 0"
    )
    # the lease is held: the runtime completes it as failing with the parser's message
    setup.client.complete(ref.id, ActionResult.failing(str(info.value)))
    action = setup.cp.admin.get_action(setup.env_id, ref.id)
    assert action["state"] == "completed"
    assert action["result"]["status"] == "failing"


def test_unknown_action_type_is_an_invalid_action(setup: Setup) -> None:
    setup.cp.admin.enqueue_raw(setup.env_id, {"type": "deployment_explode"})
    [ref] = setup.client.pending()
    with pytest.raises(InvalidActionError, match=r"^action a-\d+: type: Input should be"):
        setup.client.claim(ref.id, lease_seconds=60)


def test_token_file_is_reread_so_rotation_needs_no_restart(setup: Setup, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(setup.token + "\n")
    client = NativeControlPlane(setup.cp.agent_settings(
        setup.env_id, None, token_file=str(token_file)), agent_id="agent-1")
    assert client.pending() == []
    new = setup.cp.admin.rotate_token(setup.env_id)
    with pytest.raises(ControlPlaneError, match="401 unauthorized") as info:
        client.pending()
    assert info.value.transient is False
    token_file.write_text(new)
    assert client.pending() == []
    client.close()


def test_token_for_another_environment_is_a_permanent_error(setup: Setup) -> None:
    _, other_token = setup.cp.create_environment()
    client = NativeControlPlane(setup.cp.agent_settings(setup.env_id, other_token))
    with pytest.raises(PermissionDeniedError, match="403 forbidden") as info:
        client.heartbeat(EnvironmentStatus(agent_version="0.1.0", plugin="filesystem"))
    assert info.value.transient is False
    assert other_token not in str(info.value)
    client.close()


# -- faults --------------------------------------------------------------------------------------


def test_transient_5xx_is_retried_and_then_succeeds(proxied: tuple[Setup, FaultyProxy]) -> None:
    setup, proxy = proxied
    proxy.faults = [Fault(status=502), Fault(drop=True)]
    assert setup.client.pending() == []
    assert len(proxy.paths) == 3
    assert len(setup.sleeps) == 2 and all(0 <= s <= 2.0 for s in setup.sleeps)


def test_persistent_5xx_gives_a_transient_error_after_three_attempts(
    proxied: tuple[Setup, FaultyProxy],
) -> None:
    setup, proxy = proxied
    proxy.faults = [Fault(status=503)] * 5
    with pytest.raises(ControlPlaneError, match="503 internal: boom") as info:
        setup.client.heartbeat(EnvironmentStatus(agent_version="0.1.0", plugin="filesystem"))
    assert info.value.transient is True
    assert len(proxy.paths) == 3


def test_retry_after_of_429_is_honoured(proxied: tuple[Setup, FaultyProxy]) -> None:
    setup, proxy = proxied
    proxy.faults = [Fault(status=429, headers={"Retry-After": "3"}, body=b"slow down")]
    assert setup.client.known_deployment_ids() == set()
    assert setup.sleeps == [3.0]


def test_persistent_429_hands_its_retry_after_to_the_runtime(
    proxied: tuple[Setup, FaultyProxy],
) -> None:
    setup, proxy = proxied
    proxy.faults = [Fault(status=429, headers={"Retry-After": "7"}, body=b"{}")] * 3
    with pytest.raises(ControlPlaneError) as info:
        setup.client.pending()
    assert info.value.transient is True
    assert getattr(info.value, "retry_after", None) == 7.0
    # short retries here: no wait may end past the 10 s request timeout, so the second
    # 7 s wait is left to the runtime's poll loop (it waits out the Retry-After it carries)
    assert setup.sleeps == [7.0]


def test_claim_is_not_retried(proxied: tuple[Setup, FaultyProxy]) -> None:
    setup, proxy = proxied
    action_id = setup.cp.deploy(setup.env_id, "d1")["id"]
    proxy.faults = [Fault(status=500)]
    with pytest.raises(ControlPlaneError) as info:
        setup.client.claim(action_id, lease_seconds=60)
    assert info.value.transient is True
    assert len(proxy.paths) == 1
    assert setup.client.claim(action_id, lease_seconds=60).id == action_id


def test_garbage_json_is_a_transient_error(proxied: tuple[Setup, FaultyProxy]) -> None:
    setup, proxy = proxied
    proxy.faults = [Fault(status=200, body=b"<html>proxy says hi</html>")] * 3
    with pytest.raises(ControlPlaneError, match="not JSON") as info:
        setup.client.pending()
    assert info.value.transient is True
    proxy.faults = [Fault(status=200, body=b'{"actions": "nope"}')]
    with pytest.raises(ControlPlaneError, match="unusable action list"):
        setup.client.pending()


def test_unreachable_control_plane_is_a_transient_error(setup: Setup) -> None:
    from tests.fixtures.controlplane import free_port

    client = NativeControlPlane(setup.cp.agent_settings(
        setup.env_id, setup.token, url=f"http://127.0.0.1:{free_port()}", timeout_seconds=2),
        sleep=lambda _: None)
    with pytest.raises(ControlPlaneError, match="cannot connect") as info:
        client.pending()
    assert info.value.transient is True
    assert setup.token not in str(info.value)
    client.close()

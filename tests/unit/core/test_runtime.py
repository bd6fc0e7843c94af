"""Runtime scheduling: claiming, serialisation per deployment, failures and shutdown.

These tests drive the runtime with `MemoryControlPlane`, an in-memory
implementation of the `ControlPlane` protocol, because what is under test is
the scheduling logic (ordering, concurrency, lease handling), which needs
precise control over timing and failures. The real HTTP path between agent
and the reference control plane is covered by tests/integration/core.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from agent.config import Settings, load_settings
from agent.controlplane.http import parse_action_ref
from agent.errors import (
    ControlPlaneError,
    InvalidActionError,
    LeaseConflictError,
    NotFoundError,
    PluginError,
)
from agent.logs import register_secret, scrub
from agent.model import (
    Action,
    ActionRef,
    ActionResult,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EnvironmentStatus,
    Event,
    ResultData,
    Status,
)
from agent.runtime import EXIT_ACTIONS_UNFINISHED, EXIT_CONTROL_PLANE_UNREACHABLE, Runtime


class MemoryControlPlane:
    """Protocol-faithful in-memory control plane: leases, per-deployment order, raw payloads."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.leased: set[str] = set()
        self.results: dict[str, ActionResult] = {}
        self.events: dict[str, list[str]] = {}
        self.renewals: list[str] = []
        self.released: list[str] = []
        self.heartbeats: list[EnvironmentStatus] = []
        self.fail_polls = 0
        self.serialise = True  # False: list every open action, like a careless control plane
        self.lock = threading.Lock()

    def add(self, action_type: str, deployment_id: str, **extra: Any) -> str:
        action_id = f"a{len(self.actions) + 1}"
        payload = {"id": action_id, "type": action_type, "environment_id": "env",
                   "deployment_id": deployment_id, **extra}
        if action_type in ("deployment_start", "deployment_replace_model") and \
                "deployment" not in extra:
            payload["deployment"] = {"id": deployment_id, "model": {"id": "m1", "image": "x:1"}}
        self.actions.append(payload)
        return action_id

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        if self.fail_polls:
            self.fail_polls -= 1
            raise ControlPlaneError("connection refused")
        with self.lock:
            refs, blocked = [], set()
            for payload in self.actions:
                done = payload["id"] in self.results
                if not done and payload["deployment_id"] not in blocked:
                    if payload["id"] not in self.leased:
                        refs.append(ActionRef(id=payload["id"], type=payload["type"],
                                              deployment_id=payload["deployment_id"]))
                    if self.serialise:
                        blocked.add(payload["deployment_id"])
            return refs

    def claim(self, action_id: str, lease_seconds: int) -> Action:
        with self.lock:
            if action_id in self.leased:
                raise LeaseConflictError("leased")
            payload = next((p for p in self.actions if p["id"] == action_id), None)
            if payload is None:
                raise NotFoundError(f"action {action_id!r} not found")
            self.leased.add(action_id)
        try:
            return Action.model_validate(payload)
        except Exception as exc:
            raise InvalidActionError(f"action {action_id}: {exc}", action_id) from exc

    def renew(self, action_id: str, lease_seconds: int) -> None:
        self.renewals.append(action_id)

    def release(self, action_id: str) -> None:
        self.released.append(action_id)
        self.leased.discard(action_id)

    def event(self, action_id: str, event: Event) -> None:
        self.events.setdefault(action_id, []).append(event.message)

    def complete(self, action_id: str, result: ActionResult) -> None:
        with self.lock:
            self.results[action_id] = result
            self.leased.discard(action_id)

    def heartbeat(self, status: EnvironmentStatus) -> None:
        self.heartbeats.append(status)

    def known_deployment_ids(self) -> set[str] | None:
        return {p["deployment_id"] for p in self.actions}

    def close(self) -> None:
        return None


class RecordingPlugin:
    """A plugin that records calls and can be slowed down or made to fail."""

    name = "recording"

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.running: dict[str, int] = {}
        self.max_parallel_per_deployment = 0
        self.max_parallel = 0
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def _work(self, verb: str, deployment_id: str) -> ActionResult:
        with self.lock:
            self.calls.append((verb, deployment_id))
            self.running[deployment_id] = self.running.get(deployment_id, 0) + 1
            self.max_parallel_per_deployment = max(self.max_parallel_per_deployment,
                                                   self.running[deployment_id])
            self.max_parallel = max(self.max_parallel, sum(self.running.values()))
        time.sleep(self.delay)
        with self.lock:
            self.running[deployment_id] -= 1
        if self.fail:
            raise PluginError("image pull failed: registry.example/x:1 not found")
        return ActionResult(status=Status.PASSING, state=DeploymentState.READY,
                            data=ResultData(current_model_id="m1"))

    def start(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        report("starting")
        return self._work("start", spec.id)

    def replace_model(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        return self._work("replace", spec.id)

    def relaunch(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        return self._work("relaunch", spec.id)

    def stop(self, deployment_id: str, report: Any) -> ActionResult:
        return self._work("stop", deployment_id)

    def status(self, deployment_id: str) -> DeploymentStatus:
        return DeploymentStatus(deployment_id=deployment_id, state=DeploymentState.READY)

    def list(self) -> list[DeploymentStatus]:
        return []

    def environment_status(self, known_ids: set[str] | None = None) -> EnvironmentStatus:
        return EnvironmentStatus(agent_version="t", plugin=self.name, status=Status.PASSING)

    def close(self) -> None:
        return None


def settings(**overrides: Any) -> Settings:
    values = {"runtime.workers": 4, "control_plane.poll_interval_seconds": 0.05,
              "control_plane.lease_seconds": 30, "runtime.shutdown_grace_seconds": 5,
              "control_plane.heartbeat_interval_seconds": 0.1, **overrides}
    return load_settings(environ={}, overrides=[f"{k}={v}" for k, v in values.items()])


def run_in_thread(runtime: Runtime) -> threading.Thread:
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    return thread


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_once_executes_everything_pending_and_reports_results() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    first = cp.add("deployment_start", "dep-a")
    second = cp.add("deployment_stop", "dep-a")
    third = cp.add("deployment_start", "dep-b")
    assert Runtime(settings(), cp, plugin).run(once=True) == 0
    assert set(cp.results) == {first, second, third}
    assert all(r.status == Status.PASSING for r in cp.results.values())
    assert cp.events[first] == ["starting"]
    assert plugin.calls.index(("start", "dep-a")) < plugin.calls.index(("stop", "dep-a"))
    assert cp.heartbeats, "once mode still reports the environment"


def test_one_deployment_is_serialised_while_different_ones_run_in_parallel() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=0.2)
    for _ in range(3):
        cp.add("deployment_start", "same")
    for name in ("p1", "p2", "p3"):
        cp.add("deployment_start", name)
    Runtime(settings(), cp, plugin).run(once=True)
    assert len(cp.results) == 6
    assert plugin.max_parallel_per_deployment == 1
    assert plugin.max_parallel >= 2


def test_malformed_action_is_completed_as_failing_and_the_agent_goes_on() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    bad_type = cp.add("deployment_explode", "dep-x")
    bad_replicas = cp.add("deployment_start", "dep-y", deployment={
        "id": "dep-y", "model": {"id": "m"}, "replicas": -1})
    bad_name = cp.add("deployment_start", "Bad_Name", deployment={
        "id": "Bad_Name", "model": {"id": "m"}})
    good = cp.add("deployment_start", "dep-z")
    Runtime(settings(), cp, plugin).run(once=True)
    for action_id in (bad_type, bad_replicas, bad_name):
        result = cp.results[action_id]
        assert result.status == Status.FAILING
        assert result.data.message and result.data.message.startswith("invalid action")
    assert "replicas" in (cp.results[bad_replicas].data.message or "")
    assert "DNS-1123" in (cp.results[bad_name].data.message or "")
    assert cp.results[good].status == Status.PASSING


def test_plugin_failure_becomes_a_failing_result_with_the_reason() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(fail=True)
    action = cp.add("deployment_start", "dep-a")
    Runtime(settings(), cp, plugin).run(once=True)
    result = cp.results[action]
    assert (result.status, result.state) == (Status.FAILING, DeploymentState.ERRORED)
    assert "image pull failed" in (result.data.message or "")


def test_start_without_spec_is_invalid() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    cp.actions.append({"id": "n1", "type": "deployment_start", "environment_id": "env",
                       "deployment_id": "dep"})
    Runtime(settings(), cp, plugin).run(once=True)
    assert "needs a deployment spec" in (cp.results["n1"].data.message or "")


def test_exits_non_zero_after_consecutive_poll_failures() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    cp.fail_polls = 1000
    runtime = Runtime(settings(**{"control_plane.max_consecutive_failures": 3,
                                  "control_plane.poll_interval_seconds": 0.01}), cp, plugin)
    assert runtime.run() == EXIT_CONTROL_PLANE_UNREACHABLE


def test_recovers_from_transient_poll_failures_without_losing_actions() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    action = cp.add("deployment_start", "dep-a")
    cp.fail_polls = 2
    runtime = Runtime(settings(**{"control_plane.poll_interval_seconds": 0.01}), cp, plugin)
    thread = run_in_thread(runtime)
    wait_until(lambda: action in cp.results)
    assert runtime.health.healthy()[0] and runtime.health.ready()[0]
    runtime.request_stop()
    thread.join(5)
    assert runtime.exit_code == 0


def test_shutdown_releases_leases_of_actions_that_outlive_the_grace_period() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=3)
    action = cp.add("deployment_start", "slow")
    runtime = Runtime(settings(**{"runtime.shutdown_grace_seconds": 0.2}), cp, plugin)
    thread = run_in_thread(runtime)
    wait_until(lambda: plugin.calls)
    runtime.request_stop()
    thread.join(5)
    assert not thread.is_alive()
    assert cp.released == [action]
    assert action not in cp.results


def test_shutdown_lets_short_actions_finish() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=0.3)
    action = cp.add("deployment_start", "quick")
    runtime = Runtime(settings(), cp, plugin)
    thread = run_in_thread(runtime)
    wait_until(lambda: plugin.calls)
    runtime.request_stop()
    thread.join(5)
    assert cp.results[action].status == Status.PASSING
    assert not cp.released


def test_leases_are_renewed_during_long_actions() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=1.5)
    action = cp.add("deployment_start", "long")
    runtime = Runtime(settings(**{"control_plane.lease_seconds": 10}), cp, plugin)
    runtime.settings.control_plane.lease_seconds = 3  # below the validated floor, for speed
    runtime.run(once=True)
    assert action in cp.renewals
    assert cp.results[action].status == Status.PASSING


@pytest.mark.parametrize("workers", [1, 2])
def test_never_more_actions_in_flight_than_workers(workers: int) -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=0.1)
    for index in range(6):
        cp.add("deployment_start", f"d{index}")
    Runtime(settings(**{"runtime.workers": workers}), cp, plugin).run(once=True)
    assert len(cp.results) == 6
    assert plugin.max_parallel <= workers


def test_runtime_itself_serialises_a_deployment_and_keeps_its_order() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=0.1)
    cp.serialise = False  # the runtime alone must keep one deployment's actions apart
    first = cp.add("deployment_start", "same")
    cp.add("deployment_replace_model", "same")
    last = cp.add("deployment_stop", "same")
    Runtime(settings(), cp, plugin).run(once=True)
    assert plugin.max_parallel_per_deployment == 1
    assert [verb for verb, _ in plugin.calls] == ["start", "replace", "stop"]
    assert {first, last} <= set(cp.results)


class CompleteFailsOnce(MemoryControlPlane):
    """`complete` hits a bug (not an AgentError) the first time it is called."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def complete(self, action_id: str, result: ActionResult) -> None:
        if self.broken:
            self.broken = False
            raise KeyError("bug while reporting")
        super().complete(action_id, result)


def test_a_bug_while_reporting_does_not_block_the_deployment_or_the_once_run() -> None:
    cp, plugin = CompleteFailsOnce(), RecordingPlugin()
    cp.serialise = False
    cp.add("deployment_start", "dep")
    follow_up = cp.add("deployment_stop", "dep")
    runtime = Runtime(settings(**{"runtime.workers": 1}), cp, plugin)
    thread = threading.Thread(target=runtime.run, kwargs={"once": True}, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "--once must end"
    assert cp.results[follow_up].status == Status.PASSING, "the deployment is not blocked"
    assert not runtime._in_flight


class Standby:
    """Leadership that another replica holds."""

    def is_leader(self) -> bool:
        return False

    def start(self, on_lost: Any) -> None:
        return None

    def stop(self) -> None:
        return None


def test_a_standby_replica_stays_live_and_is_not_ready() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    cp.add("deployment_start", "dep")
    runtime = Runtime(settings(**{"runtime.stall_seconds": 0.5,
                                  "runtime.leader_election.retry_period_seconds": 1}),
                      cp, plugin, leadership=Standby())
    runtime.settings.runtime.leader_election.retry_period_seconds = 0.1  # type: ignore[assignment]
    thread = run_in_thread(runtime)
    time.sleep(1.0)
    try:
        assert runtime.health.healthy() == (True, "ok"), "liveness must not kill a standby"
        assert not runtime.health.ready()[0]
        assert not plugin.calls, "a standby claims nothing"
    finally:
        runtime.request_stop()
        thread.join(5)


@pytest.mark.parametrize("bad_id", ["../victim", "/", "a/b", ".git"])
def test_a_bad_deployment_id_never_reaches_the_plugin(bad_id: str) -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    cp.actions.append({"id": "s1", "type": "deployment_stop", "environment_id": "env",
                       "deployment_id": bad_id})
    Runtime(settings(), cp, plugin).run(once=True)
    assert not plugin.calls
    assert "not a DNS-1123 label" in (cp.results["s1"].data.message or "")


def test_once_gives_up_on_an_action_that_outlives_the_action_timeout() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=3)
    action = cp.add("deployment_start", "stuck")
    runtime = Runtime(settings(**{"runtime.action_timeout_seconds": 0.3,
                                  "runtime.shutdown_grace_seconds": 0.1}), cp, plugin)
    started = time.monotonic()
    assert runtime.run(once=True) == EXIT_ACTIONS_UNFINISHED
    assert time.monotonic() - started < 2.5
    assert cp.released == [action]


class AlwaysOffers(MemoryControlPlane):
    """Offers the same action again after it completed (a target that never converges)."""

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        with self.lock:
            self.results.clear()
            self.leased.clear()
        return super().pending(wait_seconds)


def test_once_does_not_execute_an_action_twice_in_one_run() -> None:
    cp, plugin = AlwaysOffers(), RecordingPlugin()
    cp.add("deployment_start", "flappy")
    thread = threading.Thread(target=Runtime(settings(), cp, plugin).run,
                              kwargs={"once": True}, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "--once must end"
    assert plugin.calls == [("start", "flappy")]


class EventsRejected(MemoryControlPlane):
    def event(self, action_id: str, event: Event) -> None:
        raise RuntimeError("event endpoint broken")


class ChattyPlugin(RecordingPlugin):
    def start(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        report("odd level", level="notice")
        report("with a secret", url="https://user:hunter2-secret@example/x")
        return self._work("start", spec.id)


def test_events_never_fail_the_action_and_their_details_are_scrubbed() -> None:
    register_secret("hunter2-secret")
    cp, plugin = MemoryControlPlane(), ChattyPlugin()
    events: list[Event] = []
    cp.event = lambda action_id, event: events.append(event)  # type: ignore[method-assign]
    action = cp.add("deployment_start", "dep")
    Runtime(settings(), cp, plugin).run(once=True)
    assert cp.results[action].status == Status.PASSING
    assert [e.level for e in events] == ["info", "info"]
    assert "hunter2-secret" not in str([e.details for e in events])

    broken = EventsRejected()
    action = broken.add("deployment_start", "dep")
    Runtime(settings(), broken, ChattyPlugin()).run(once=True)
    assert broken.results[action].status == Status.PASSING


def test_scrub_replaces_the_longest_secret_whole() -> None:
    register_secret("abcd-short")
    register_secret("abcd-short-and-longer")
    assert scrub("token abcd-short-and-longer end") == "token *** end"


def test_hung_action_is_reported_failed_and_its_deployment_stays_serialised() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=2.5)
    hung = cp.add("deployment_start", "slow")
    runtime = Runtime(settings(**{"runtime.action_timeout_seconds": 1}), cp, plugin)
    runtime.settings.control_plane.lease_seconds = 3  # keeper checks every second, for speed
    thread = run_in_thread(runtime)
    wait_until(lambda: hung in cp.results, timeout=10)
    result = cp.results[hung]
    assert result.status == Status.FAILING
    assert "did not finish within 1s" in (result.data.message or "")
    follow_up = cp.add("deployment_stop", "slow")
    wait_until(lambda: follow_up in cp.results, timeout=15)
    runtime.request_stop()
    thread.join(10)
    assert cp.results[hung].status == Status.FAILING, "the late result is not sent"
    assert plugin.max_parallel_per_deployment == 1


class ListsGarbage(MemoryControlPlane):
    """Lists malformed entries too, as parsed by the protocol client (`parse_action_ref`)."""

    def __init__(self, *garbage: object) -> None:
        super().__init__()
        self.garbage = list(garbage)

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        ids = {entry.get("id") for entry in self.garbage if isinstance(entry, dict)}
        refs = [ref for ref in super().pending(wait_seconds) if ref.id not in ids]
        with self.lock:
            listed = [entry for entry in self.garbage if not (
                isinstance(entry, dict) and entry.get("id") in self.results)]
        return [parse_action_ref(entry) for entry in listed] + refs


def test_a_malformed_pending_entry_is_reported_failing_and_the_others_still_run() -> None:
    cp = ListsGarbage({"id": 7}, {"id": "a1", "type": ["deployment_stop"]}, "not an object")
    cp.add("deployment_stop", "victim")  # a1, listed malformed
    good = cp.add("deployment_start", "fine")  # listed after the malformed entries
    plugin = RecordingPlugin()
    assert Runtime(settings(), cp, plugin).run(once=True) == 0
    assert cp.results[good].status == Status.PASSING
    assert plugin.calls == [("start", "fine")], "the malformed entry is not executed"
    message = cp.results["a1"].data.message or ""
    assert cp.results["a1"].status == Status.FAILING
    assert message == ("invalid action: listed entry does not validate: "
                       "type: Input should be a valid string")
    assert "7" not in cp.results, "an id the control plane does not know cannot be reported"


def test_an_action_delivered_too_often_fails_without_running_again() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    last_try = cp.add("deployment_start", "oom", attempt=5)
    exhausted = cp.add("deployment_start", "killer", attempt=6)
    Runtime(settings(), cp, plugin).run(once=True)
    assert plugin.calls == [("start", "oom")]
    result = cp.results[exhausted]
    assert (result.status, result.state) == (Status.FAILING, DeploymentState.ERRORED)
    assert "not run again: this is delivery attempt 6 and runtime.max_delivery_attempts " \
           "is 5" in (result.data.message or "")
    assert cp.results[last_try].status == Status.PASSING

    cp, plugin = MemoryControlPlane(), RecordingPlugin()
    once = cp.add("deployment_start", "strict", attempt=2)
    Runtime(settings(**{"runtime.max_delivery_attempts": 1}), cp, plugin).run(once=True)
    assert not plugin.calls and cp.results[once].status == Status.FAILING


def test_workers_stuck_past_the_action_timeout_fail_liveness_only_when_all_are() -> None:
    cp, plugin = MemoryControlPlane(), RecordingPlugin(delay=3)
    hung = cp.add("deployment_start", "hangs")
    runtime = Runtime(settings(**{"runtime.action_timeout_seconds": 0.3,
                                  "runtime.workers": 2}), cp, plugin)
    thread = run_in_thread(runtime)
    gauge = lambda: runtime.metrics.registry.get_sample_value(  # noqa: E731
        "management_agent_stuck_workers")
    wait_until(lambda: gauge() == 1)
    assert runtime.health.healthy() == (True, "ok"), "one free worker can still make progress"
    second = cp.add("deployment_start", "hangs-too")
    wait_until(lambda: gauge() == 2)
    healthy, reason = runtime.health.healthy()
    assert not healthy
    assert reason.startswith("all 2 worker(s) stuck past runtime.action_timeout_seconds: ")
    assert f"deployment_start {hung} running for" in reason and second in reason
    wait_until(lambda: gauge() == 0, timeout=15)
    assert runtime.health.healthy() == (True, "ok"), "healthy again once the calls return"
    runtime.request_stop()
    thread.join(10)

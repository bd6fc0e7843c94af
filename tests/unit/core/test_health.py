"""Probes and metrics: what `/healthz` and `/readyz` answer in each state of the agent.

The server is the real `HealthServer` on a free port of 127.0.0.1; time is
moved by setting the state's timestamps, not by sleeping.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.config import Settings
from agent.health import HealthServer, HealthState, Metrics, stall_seconds
from agent.retry import CAP


class Leader:
    def __init__(self) -> None:
        self.leading = True

    def __call__(self) -> bool:
        return self.leading


Probes = tuple[HealthState, Metrics, Leader, str]


@pytest.fixture
def probes() -> Iterator[Probes]:
    leader = Leader()
    state, metrics = HealthState(60.0, leader), Metrics()
    server = HealthServer("127.0.0.1", 0, state, metrics)
    server.start()
    try:
        yield state, metrics, leader, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_not_ready_until_the_control_plane_was_reached(probes: Probes) -> None:
    state, _, _, url = probes
    assert _get(f"{url}/healthz") == (200, "ok\n")
    assert _get(f"{url}/readyz") == (503, "control plane not reached yet\n")
    state.poll_succeeded()
    assert _get(f"{url}/readyz") == (200, "ok\n")


def test_a_stalled_poll_loop_fails_liveness(probes: Probes) -> None:
    state, _, _, url = probes
    state.poll_succeeded()
    state.last_poll_attempt = time.monotonic() - 61  # the loop has not come round for 61 s
    status, body = _get(f"{url}/healthz")
    assert status == 503 and body.startswith("poll loop stalled: no poll for 61s (limit 60s)")
    assert _get(f"{url}/livez")[0] == 503


def test_failed_polls_keep_liveness_but_not_a_stale_success(probes: Probes) -> None:
    """An outage the agent is waiting out is not a stall: failed attempts count."""
    state, _, _, url = probes
    state.poll_succeeded()
    state.last_poll_ok = time.monotonic() - 600
    state.poll_attempted()
    assert _get(f"{url}/healthz")[0] == 200


def test_a_standby_is_live_but_not_ready(probes: Probes) -> None:
    state, _, leader, url = probes
    state.poll_succeeded()
    leader.leading = False
    assert _get(f"{url}/healthz")[0] == 200
    assert _get(f"{url}/readyz") == (503, "standby: another replica holds the leader lease\n")


def test_a_stopping_agent_is_not_ready(probes: Probes) -> None:
    state, _, _, url = probes
    state.poll_succeeded()
    state.stopping = True
    assert _get(f"{url}/readyz") == (503, "shutting down\n")


def test_metrics_are_served_in_prometheus_text(probes: Probes) -> None:
    _, metrics, _, url = probes
    metrics.actions.labels("deployment_start", "succeeded").inc()
    metrics.polls.inc()
    status, body = _get(f"{url}/metrics")
    assert status == 200
    assert ('management_agent_actions_total{outcome="succeeded",type="deployment_start"} 1.0'
            in body)
    assert "management_agent_polls_total 1.0" in body
    assert _get(f"{url}/nope")[0] == 404


def test_the_default_stall_period_outlasts_the_longest_backoff() -> None:
    settings = Settings.model_validate({"control_plane": {
        "poll_interval_seconds": 5, "long_poll_seconds": 20, "timeout_seconds": 30}})
    assert stall_seconds(settings) == CAP + 3 * (20 + 30)
    settings.runtime.stall_seconds = 42
    assert stall_seconds(settings) == 42

"""`/healthz`, `/readyz` and `/metrics` on one small HTTP server thread.

Liveness means "I am still polling": `/healthz` answers 503 when the poll
loop has not finished an attempt (successful or not) for the stall period, so
Kubernetes restarts a wedged agent but not one that is merely waiting out a
control-plane outage with backoff (that case ends in a deliberate non-zero
exit after N consecutive failures instead). Readiness means
"this replica takes work": polled at least once and, with leader election,
holds the lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from agent.retry import CAP

if TYPE_CHECKING:
    from agent.config import Settings

log = logging.getLogger(__name__)


def stall_seconds(settings: Settings) -> float:
    """`runtime.stall_seconds`, or by default longer than the longest backoff plus a slow
    request, so that waiting out a control-plane outage never looks like a stall."""
    cp = settings.control_plane
    return settings.runtime.stall_seconds or max(
        10 * cp.poll_interval_seconds, CAP + 3 * (cp.long_poll_seconds + cp.timeout_seconds))


class Metrics:
    """The agent's Prometheus metrics, in a registry of its own (tests create many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter(
            "management_agent_actions_total", "Actions completed, by type and outcome.",
            ["type", "outcome"], registry=self.registry,
        )
        self.action_duration = Histogram(
            "management_agent_action_duration_seconds", "Time to execute an action.",
            ["type"], registry=self.registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800),
        )
        self.poll_errors = Counter(
            "management_agent_poll_errors_total", "Failed polls of the control plane.",
            registry=self.registry,
        )
        self.polls = Counter(
            "management_agent_polls_total", "Polls of the control plane.", registry=self.registry
        )
        self.in_flight = Gauge(
            "management_agent_actions_in_flight", "Actions being executed now.",
            registry=self.registry,
        )
        self.last_poll = Gauge(
            "management_agent_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll.", registry=self.registry,
        )
        self.leader = Gauge(
            "management_agent_leader", "1 when this replica holds the leader lease.",
            registry=self.registry,
        )


class HealthState:
    """What the probes look at; updated by the runtime's loops."""

    def __init__(self, stall_seconds: float, is_leader: Callable[[], bool]) -> None:
        self.stall_seconds = stall_seconds
        self.is_leader = is_leader
        self.started = time.monotonic()
        self.last_poll_ok: float | None = None
        self.last_poll_attempt: float | None = None
        self.stopping = False

    def poll_succeeded(self) -> None:
        self.last_poll_ok = self.last_poll_attempt = time.monotonic()

    def poll_attempted(self) -> None:
        self.last_poll_attempt = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        reference = self.last_poll_attempt or self.started
        silent = time.monotonic() - reference
        if silent > self.stall_seconds:
            return False, f"poll loop stalled: no poll for {silent:.0f}s " \
                          f"(limit {self.stall_seconds:.0f}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if self.last_poll_ok is None:
            return False, "control plane not reached yet"
        if not self.is_leader():
            return False, "standby: another replica holds the leader lease"
        return True, "ok"


class HealthServer:
    """Serves the probes and metrics until `stop()`."""

    def __init__(self, host: str, port: int, state: HealthState, metrics: Metrics) -> None:
        handler = _handler_class(state, metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("health endpoints on port %d (/healthz /readyz /metrics)", self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_class(state: HealthState, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/livez"):
                self._verdict(*state.healthy())
            elif path == "/readyz":
                self._verdict(*state.ready())
            else:
                self._send(404, b"not found\n", "text/plain")

        def _verdict(self, ok: bool, reason: str) -> None:
            self._send(200 if ok else 503, f"{reason}\n".encode(), "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would drown the log

    return Handler

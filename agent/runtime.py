"""The daemon: poll loop, workers, lease keeper, heartbeat, signals and shutdown.

Lifecycle: `startup -> poll loop -> shutdown`. The poll loop claims actions
and hands them to a bounded pool of worker threads; actions on the same
deployment never run at the same time. A lease keeper renews the lease of
every in-flight action, so a long build is not re-delivered to someone else;
if this process dies, the leases expire and the control plane delivers the
actions again (at-least-once; plugins are idempotent).

Poll, heartbeat and lease renewal are `agent.retry.service_loop`s: jittered,
backing off on failure, logging an outage once. Signal handlers only set a
flag. On SIGTERM the agent stops claiming, lets in-flight actions finish
within the grace period and releases the leases of the rest, so another
replica can pick them up at once; a second SIGTERM/SIGINT skips the wait. A
heartbeat in progress finishes first. Results are delivered (and malformed,
exhausted or timed-out actions failed) by `agent.reporting.ResultReporter`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent import __version__
from agent.config import Settings
from agent.controlplane import ControlPlane
from agent.errors import AgentError, InvalidActionError, LeaseConflictError
from agent.health import HealthState, Metrics, stall_seconds
from agent.leader import AlwaysLeader, Leadership
from agent.logs import action_context
from agent.model import Action, ActionRef, InvalidActionRef, Status
from agent.plugins import Plugin
from agent.reporting import ResultReporter
from agent.retry import Outage, service_loop
from agent.worker import execute

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONTROL_PLANE_UNREACHABLE = 3
EXIT_ACTIONS_UNFINISHED = 4  # --once: an action outlived runtime.action_timeout_seconds
EXIT_LEADERSHIP_LOST = 5  # the leader lease was lost; a restart rejoins as a standby

@dataclass
class _InFlight:
    action: Action
    key: str  # what serialises it: the deployment id (or the action id when there is none)
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False  # completed as failing by the lease keeper; the plugin still runs


class Runtime:
    """Runs actions from one control plane through one plugin."""

    def __init__(
        self,
        settings: Settings,
        control_plane: ControlPlane,
        plugin: Plugin,
        leadership: Leadership | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.control_plane = control_plane
        self.plugin = plugin
        self.leadership = leadership or AlwaysLeader()
        self.metrics = metrics or Metrics()
        self.reporter = ResultReporter(settings, control_plane, self.metrics)
        self.health = HealthState(stall_seconds(settings), self.leadership.is_leader,
                                  workers=settings.runtime.workers, stuck=self.stuck_workers)
        self.metrics.stuck_workers.set_function(lambda: len(self.stuck_workers()))
        self.exit_code = EXIT_OK
        self._claimed_in_poll = 0
        self._stop = threading.Event()
        self._force = threading.Event()  # a second signal: stop waiting for in-flight work
        # action leases are renewed until shutdown has finished or released the in-flight work
        # (not just until `_stop`): a lease that lapsed during the grace period would let
        # another replica claim an action this one is still executing
        self._leases_done = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}
        self._busy_deployments: set[str] = set()
        self._work: queue.Queue[_InFlight | None] = queue.Queue()
        # --once: actions claimed in this run; one that is offered again (it did not converge)
        # is not executed a second time, so the run ends
        self._once_claimed: set[str] | None = None
        self._threads: list[threading.Thread] = []
        self._poll_outage = Outage("polling the control plane", log)
        self._heartbeat_outage = Outage("heartbeat to the control plane", log)

    def stuck_workers(self) -> list[str]:
        """The actions running past `runtime.action_timeout_seconds`, one line each; a worker
        that holds one can take nothing else until the plugin call returns."""
        limit = self.settings.runtime.action_timeout_seconds
        now = time.monotonic()
        with self._lock:
            items = list(self._in_flight.values())
        return [f"{item.action.type} {item.action.id} running for {now - item.started:.0f}s "
                f"(limit {limit:.0f}s)" for item in items if now - item.started > limit]

    # -- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loops to stop; safe to call from a signal handler."""
        self._stop.set()
        self._wake.set()

    def force_stop(self) -> None:
        """Stop without waiting for in-flight actions (their leases expire and the control
        plane delivers them again); safe to call from a signal handler."""
        self._force.set()
        self.request_stop()

    def run(self, once: bool = False) -> int:
        """Run until stopped (or, with `once`, until nothing is pending); return the exit code."""
        self._start_threads(heartbeat=not once)
        self.leadership.start(on_lost=self._leadership_lost)
        log.info("agent %s started: environment %s, plugin %s, %d worker(s)", __version__,
                 self.settings.control_plane.environment_id, self.plugin.name,
                 self.settings.runtime.workers)
        try:
            if once:
                self._run_once()
            else:
                self._poll_loop()
        finally:
            self._shutdown()
        return self.exit_code

    def _start_threads(self, heartbeat: bool) -> None:
        for index in range(self.settings.runtime.workers):
            self._spawn(self._worker_loop, f"worker-{index}")
        self._spawn(self._lease_keeper_loop, "lease-keeper")
        if heartbeat:
            self._spawn(self._heartbeat_loop, "heartbeat")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception:
                log.exception("background task %s crashed", name)
            if not self._stop.is_set():
                log.error("background task %s returned although it should run until shutdown",
                          name)

        # daemon threads: a plugin call that hangs past the grace period must not block exit
        thread = threading.Thread(target=guarded, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _join_threads(self, timeout: float) -> None:
        """A heartbeat or lease renewal in progress finishes (bounded) before clients close."""
        deadline = time.monotonic() + timeout
        for thread in (t for t in self._threads if t is not threading.current_thread()):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _leadership_lost(self) -> None:
        log.error("leader lease lost: stopping (the new leader takes over in-flight work)")
        self.exit_code = EXIT_LEADERSHIP_LOST
        self.request_stop()

    # -- polling ----------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        cp = self.settings.control_plane
        error = service_loop(self._poll_turn, cp.poll_interval_seconds, stop=self._stop,
                             max_consecutive_failures=cp.max_consecutive_failures,
                             outage=self._poll_outage, wake=self._wake)
        if error is not None:
            log.error("control plane unreachable for %d consecutive polls (last error: %s); "
                      "exiting so that Kubernetes restarts the agent",
                      cp.max_consecutive_failures, error)
            self.exit_code = EXIT_CONTROL_PLANE_UNREACHABLE

    def _poll_turn(self) -> float | None:
        """One poll (a standby only waits); returns the seconds to the next, None: the interval."""
        cp = self.settings.control_plane
        if not self.leadership.is_leader():
            self.metrics.leader.set(0)
            self.health.poll_attempted()  # a standby's loop is alive: /healthz stays 200
            return self.settings.runtime.leader_election.retry_period_seconds
        self.metrics.leader.set(1)
        try:
            refs = self._poll(wait=cp.long_poll_seconds)
        except Exception:
            self.health.poll_attempted()
            self.metrics.poll_errors.inc()
            raise
        if cp.long_poll_seconds and not refs:
            return 0.0  # the server already waited for us
        with self._lock:
            free = len(self._in_flight) < self.settings.runtime.workers
        return 0.0 if self._claimed_in_poll and free else None  # a burst: more may be waiting

    def _poll(self, wait: float) -> list[ActionRef]:
        self.metrics.polls.inc()
        refs = self.control_plane.pending(wait_seconds=wait)
        self.health.poll_succeeded()
        self.metrics.last_poll.set_to_current_time()
        self._claimed_in_poll = 0
        for ref in refs:
            if self._stop.is_set() or not self._dispatch(ref):
                break
        return refs

    def _dispatch(self, ref: ActionRef) -> bool:
        """Claim and queue one action; False when the pool is full (stop looking)."""
        if isinstance(ref, InvalidActionRef):
            self.reporter.reject_listed(ref)
            return True
        key = ref.deployment_id or f"action:{ref.id}"
        with self._lock:
            if ref.id in self._in_flight or key in self._busy_deployments:
                return True  # running, or waiting behind an earlier action on its deployment
            if self._once_claimed is not None and ref.id in self._once_claimed:
                return True
            if len(self._in_flight) >= self.settings.runtime.workers:
                return False
        try:
            action = self.control_plane.claim(ref.id, self.settings.control_plane.lease_seconds)
        except LeaseConflictError:
            log.debug("action %s is leased by another agent", ref.id)
            return True
        except InvalidActionError as exc:
            self.reporter.complete_invalid(ref, exc)
            return True
        if action.attempt > self.settings.runtime.max_delivery_attempts:
            self.reporter.complete_exhausted(action)
            return True
        item = _InFlight(action, key)
        with self._lock:
            self._in_flight[action.id] = item
            self._busy_deployments.add(key)
            if self._once_claimed is not None:
                self._once_claimed.add(action.id)
        self.metrics.in_flight.inc()
        self._claimed_in_poll += 1
        self._work.put(item)
        return True

    def _run_once(self) -> None:
        """Claim what is pending, wait for it, repeat until nothing is claimable; heartbeat."""
        self._once_claimed = set()
        error = service_loop(self._once_turn, 0.5, stop=self._stop, max_consecutive_failures=3,
                             outage=self._poll_outage)
        if error is not None:
            log.error("control plane unreachable: %s", error)
            self.exit_code = EXIT_CONTROL_PLANE_UNREACHABLE
        if not self.exit_code:
            try:
                self._send_heartbeat()
            except Exception as exc:
                self._heartbeat_outage.failed(exc)

    def _once_turn(self) -> float:
        self._poll(wait=0.0)
        if not self._wait_for_idle(timeout=self.settings.runtime.action_timeout_seconds):
            log.error("action(s) still running after runtime.action_timeout_seconds=%.0f; "
                      "giving up (their leases are released, so they are delivered again)",
                      self.settings.runtime.action_timeout_seconds)
            self.exit_code = EXIT_ACTIONS_UNFINISHED
        with self._lock:
            if self.exit_code or (not self._in_flight and not self._claimed_in_poll):
                self._stop.set()  # the run is over (nothing new was claimable)
        return 0.0

    def _wait_for_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [item.done for item in self._in_flight.values()]
            if not pending:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._force.is_set():
                return False
            pending[0].wait(min(remaining, 0.5))

    # -- workers ----------------------------------------------------------------------------

    def _worker_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            self._run_action(item)

    def _run_action(self, item: _InFlight) -> None:
        action = item.action
        try:
            with action_context(action.id, action.deployment_id):
                log.info("executing %s (attempt %d)", action.type, action.attempt)
                result = execute(action, self.plugin, self.control_plane)
                elapsed = time.monotonic() - item.started
                self.metrics.action_duration.labels(action.type).observe(elapsed)
                outcome = "succeeded" if result.status != Status.FAILING else "failed"
                self.metrics.actions.labels(action.type, outcome).inc()
                log.info("%s %s in %.1fs: state=%s status=%s", action.type, outcome, elapsed,
                         result.state, result.status)
                if item.timed_out:
                    log.warning("finished after its time limit; already reported as failed, "
                                "this late result is not sent (state=%s)", result.state)
                else:
                    self.reporter.complete(action.id, result)
        except Exception:  # a bug in reporting must not leave the deployment blocked forever
            with action_context(action.id, action.deployment_id):
                log.exception("unexpected error while completing the action; the control "
                              "plane will deliver it again when its lease expires")
        finally:
            with self._lock:
                self._in_flight.pop(action.id, None)
                self._busy_deployments.discard(item.key)
            self.metrics.in_flight.dec()
            item.done.set()
            self._wake.set()  # a follow-up action on this deployment may be deliverable now

    # -- background loops -------------------------------------------------------------------

    def _lease_keeper_loop(self) -> None:
        lease = self.settings.control_plane.lease_seconds
        service_loop(lambda: self._renew_leases(lease), lease / 3, stop=self._leases_done,
                     jitter=0.0, outage=Outage("lease keeper", log))

    def _renew_leases(self, lease: int) -> None:
        limit = self.settings.runtime.action_timeout_seconds
        with self._lock:
            items = [item for item in self._in_flight.values() if not item.timed_out]
        for item in items:
            if time.monotonic() - item.started > limit:
                self._time_out(item, limit)
        for action in [item.action for item in items if not item.timed_out]:
            try:
                self.control_plane.renew(action.id, lease)
            except LeaseConflictError:
                with action_context(action.id, action.deployment_id):
                    log.warning("lease lost: another agent may re-execute this action")
            except AgentError as exc:
                with action_context(action.id, action.deployment_id):
                    log.warning("lease renewal failed (%s); will retry", exc)

    def _time_out(self, item: _InFlight, limit: float) -> None:
        """Report a hung action as failed. Its deployment stays busy until the plugin call
        returns, so no later action on it can run alongside the hung one."""
        item.timed_out = True
        self.reporter.complete_timed_out(item.action, limit)

    def _heartbeat_loop(self) -> None:
        service_loop(self._heartbeat_turn,
                     self.settings.control_plane.heartbeat_interval_seconds, stop=self._stop,
                     outage=self._heartbeat_outage)

    def _heartbeat_turn(self) -> None:
        if self.leadership.is_leader():
            self._send_heartbeat()

    def _send_heartbeat(self) -> None:
        status = self.plugin.environment_status(self.control_plane.known_deployment_ids())
        self.control_plane.heartbeat(status)

    # -- shutdown ---------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.health.stopping = True
        self._stop.set()
        grace = self.settings.runtime.shutdown_grace_seconds
        if self._in_flight:
            log.info("waiting up to %.0fs for %d in-flight action(s)", grace,
                     len(self._in_flight))
        if not self._wait_for_idle(timeout=grace):
            with self._lock:
                unfinished = [item.action for item in self._in_flight.values()]
            if self._force.is_set():
                log.warning("forced exit: %d in-flight action(s) abandoned; their leases expire "
                            "and the control plane delivers them again", len(unfinished))
                unfinished = []
            for action in unfinished:
                with action_context(action.id, action.deployment_id):
                    log.warning("grace period over: lease released, delivered again")
                    try:
                        self.control_plane.release(action.id)
                    except AgentError as exc:
                        log.warning("release failed (%s); the lease will expire instead", exc)
        self._leases_done.set()
        for _ in range(self.settings.runtime.workers):
            self._work.put(None)
        self._join_threads(timeout=0.0 if self._force.is_set() else min(grace, 10.0))
        self.leadership.stop()
        for closer in (self.plugin.close, self.control_plane.close):
            try:
                closer()
            except Exception:
                log.exception("error while closing %s", closer)
        log.info("agent stopped")

"""Leader election on a `coordination.k8s.io/v1` Lease, for `agent.replicas > 1`.

Only the leader claims actions. The algorithm is client-go's: the holder
renews `renewTime` every retry period; a candidate takes the lease over only
when it has seen the same lease record, unchanged, for `leaseDurationSeconds`
on its *own* monotonic clock (so clock skew between nodes does not matter;
the holder's `renewTime` is never compared with the local wall clock).
Updates carry the Lease's resourceVersion, so two candidates racing for an
expired lease cannot both win (the loser gets a 409 Conflict). A leader that
sees another holder steps down at once; one that cannot renew within the
renew deadline (shorter than the lease duration) steps down before anyone
else may take over. Either way the runtime stops claiming and exits, so
in-flight work is handed over through action-lease expiry or release and is
never claimed by two replicas at once (the control plane's action lease is the
mutual exclusion; leadership only decides who polls).

Every call goes through `KubeClient` (rate limit, error mapping, 403 hints),
with no retries inside a call and a timeout of one retry period: the loop is
the retry, and a hung call must not keep a stale leader believing in itself.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import Settings
from agent.errors import ConflictError
from agent.retry import Outage

if TYPE_CHECKING:
    from agent.plugins.kubernetes.client import KubeClient

log = logging.getLogger(__name__)


LEASE_API = "coordination.k8s.io/v1"


class Leadership(Protocol):
    """Who may claim actions: `AlwaysLeader` for one replica, `LeaseLeadership` for more."""

    def is_leader(self) -> bool: ...
    def start(self, on_lost: Callable[[], None]) -> None: ...
    def stop(self) -> None: ...


class AlwaysLeader:
    """A single replica is always the leader."""

    def is_leader(self) -> bool:
        return True

    def start(self, on_lost: Callable[[], None]) -> None:
        return None

    def stop(self) -> None:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def _micro_time(when: datetime) -> str:
    """A Kubernetes MicroTime ("2026-01-02T03:04:05.000006Z")."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """Pod name when running in Kubernetes (downward API), else host name and PID."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def lease_client(settings: Settings) -> KubeClient:
    """The plugin's cluster settings, without retries inside a call and with a timeout of
    one retry period (the election loop retries every period)."""
    from agent.plugins.kubernetes.client import KubeClient

    retry_period = settings.runtime.leader_election.retry_period_seconds
    return KubeClient(settings.plugin.kubernetes.model_copy(update={
        "api_retries": 0, "api_timeout_seconds": float(max(1, retry_period))}))


class LeaseLeadership:
    """Holds or waits for the leader Lease in a background thread."""

    def __init__(self, settings: Settings, kube: KubeClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`settings.runtime.leader_election` has validated timings (retry period < renew
        deadline < lease duration); `clock` is this process's monotonic clock."""
        election = settings.runtime.leader_election
        self.name = election.lease_name
        self.namespace = election.namespace or settings.plugin.kubernetes.namespace
        self.identity = election.identity or default_identity()
        self.duration = election.lease_duration_seconds
        self.renew_deadline = election.renew_deadline_seconds
        self.retry_period = election.retry_period_seconds
        self._clock = clock
        self._kube = kube if kube is not None else lease_client(settings)
        self._leader = False
        self._last_renew = 0.0
        # the last lease record seen (holder, renewTime, resourceVersion) and when, by our clock
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._observed_duration = self.duration
        self.transitions = 0  # times this candidate became the leader (for tests and metrics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_lost: Callable[[], None] = lambda: None

    def is_leader(self) -> bool:
        """Leader only while the lease was renewed within the renew deadline: a renewal
        that hangs must not leave this replica claiming after the lease could expire."""
        return self._leader and self._clock() - self._last_renew <= self.renew_deadline

    def start(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._thread = threading.Thread(target=self._loop, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 5)
        if self._leader:
            self._release()
        self._kube.close()

    def _loop(self) -> None:
        log.info("leader election: candidate %s for lease %s/%s", self.identity,
                 self.namespace, self.name)
        outage = Outage(f"leader election: updating lease {self.namespace}/{self.name}", log)
        while not self._stop.is_set():
            if not self.tick(outage):
                self._on_lost()
                return  # the runtime is stopping: do not compete again from this process
            self._stop.wait(self.retry_period)

    def tick(self, outage: Outage | None = None) -> bool:
        """One round: acquire or renew the lease; False when this leader just lost it."""
        try:
            acquired = self._try_acquire_or_renew()
            if outage:
                outage.succeeded()
        except Exception as exc:  # API trouble: keep trying, step down after the deadline
            if outage:
                outage.failed(exc, self.retry_period)
            acquired = False
        now = self._clock()
        if acquired:
            if not self._leader:
                self.transitions += 1
                log.info("leader election: %s is now the leader", self.identity)
            self._leader, self._last_renew = True, now
        elif self._leader and (self._other_holder()
                               or now - self._last_renew > self.renew_deadline):
            self._leader = False
            holder = self._observed[0] if self._observed else None
            log.error("leader election: %s lost the lease%s", self.identity,
                      f" to {holder}" if self._other_holder() else
                      f" (not renewed for {self.renew_deadline}s)")
            return False
        return True

    def _other_holder(self) -> bool:
        """True when the last record seen names another, live holder."""
        return bool(self._observed and self._observed[0]
                    and self._observed[0] != self.identity and not self._expired())

    def _observe(self, lease: dict[str, Any]) -> None:
        spec = lease.get("spec") or {}
        record = (spec.get("holderIdentity"), str(spec.get("renewTime")),
                  lease["metadata"].get("resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        self._observed_duration = spec.get("leaseDurationSeconds") or self.duration

    def _expired(self) -> bool:
        """The observed record has not changed for its lease duration (by our clock)."""
        return self._clock() - self._observed_at > self._observed_duration

    def _read(self) -> dict[str, Any] | None:
        return self._kube.get(LEASE_API, "Lease", self.name, self.namespace)

    def _try_acquire_or_renew(self) -> bool:
        now = _micro_time(_now())
        lease = self._read()
        if lease is None:
            try:
                self._kube.create({
                    "apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity,
                             "leaseDurationSeconds": self.duration, "acquireTime": now,
                             "renewTime": now, "leaseTransitions": 0},
                })
            except ConflictError:
                return False  # another candidate created it first
            return True

        self._observe(lease)
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity and not self._expired():
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now
            spec["holderIdentity"] = self.identity
        spec["renewTime"] = now
        spec["leaseDurationSeconds"] = self.duration
        try:  # carries the resourceVersion read: a concurrent update makes this a 409
            self._kube.replace(lease, namespace=self.namespace)
        except ConflictError:
            return False  # someone else updated it since we read it
        return True

    def _release(self) -> None:
        """Give the lease up on shutdown so a standby takes over at once."""
        try:
            lease = self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is not None and spec.get("holderIdentity") == self.identity:
                spec["holderIdentity"] = None
                spec["renewTime"] = _micro_time(_now() - timedelta(seconds=self.duration + 1))
                self._kube.replace(lease, namespace=self.namespace)
                log.info("leader election: released lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("leader election: could not release the lease (%s); it will expire",
                        exc)
        self._leader = False

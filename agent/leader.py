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
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.config import Settings
from agent.errors import ConfigError

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def default_identity() -> str:
    """Pod name when running in Kubernetes (downward API), else host name and PID."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def coordination_api(settings: Settings) -> Any:
    """A CoordinationV1Api for the configured cluster (in-cluster or kubeconfig)."""
    from kubernetes import client, config

    kube = settings.plugin.kubernetes
    in_cluster = kube.in_cluster
    if in_cluster is None:
        in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and kube.kubeconfig is None
    api_client = (
        _in_cluster_client() if in_cluster else config.new_client_from_config(
            config_file=str(kube.kubeconfig) if kube.kubeconfig else None, context=kube.context)
    )
    return client.CoordinationV1Api(api_client)


def _in_cluster_client() -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class LeaseLeadership:
    """Holds or waits for the leader Lease in a background thread."""

    def __init__(self, settings: Settings, api: Any | None = None) -> None:
        election = settings.runtime.leader_election
        self.name = election.lease_name
        self.namespace = election.namespace or settings.plugin.kubernetes.namespace
        self.identity = election.identity or default_identity()
        self.duration = election.lease_duration_seconds
        self.renew_deadline = election.renew_deadline_seconds
        self.retry_period = election.retry_period_seconds
        if self.renew_deadline >= self.duration:
            raise ConfigError(
                "runtime.leader_election: renew_deadline_seconds must be shorter than "
                "lease_duration_seconds (a leader must step down before others may take over)")
        if self.retry_period >= self.renew_deadline:
            raise ConfigError(
                "runtime.leader_election: retry_period_seconds must be shorter than "
                "renew_deadline_seconds")
        self._api = api if api is not None else coordination_api(settings)
        self._leader = False
        self._last_renew = 0.0
        # every API call must end before the next retry period: a hung call would otherwise
        # keep a stale leader believing in itself
        self._deadline = {"_request_timeout": float(max(1, self.retry_period))}
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
        return self._leader and time.monotonic() - self._last_renew <= self.renew_deadline

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

    def _loop(self) -> None:
        log.info("leader election: candidate %s for lease %s/%s", self.identity,
                 self.namespace, self.name)
        while not self._stop.is_set():
            try:
                acquired = self._try_acquire_or_renew()
            except Exception as exc:  # API trouble: keep trying, step down after the deadline
                log.warning("leader election: lease %s/%s not updated: %s", self.namespace,
                            self.name, exc)
                acquired = False
            now = time.monotonic()
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
                self._on_lost()
                return  # the runtime is stopping: do not compete again from this process
            self._stop.wait(self.retry_period)

    def _other_holder(self) -> bool:
        """True when the last record seen names another, live holder."""
        return bool(self._observed and self._observed[0]
                    and self._observed[0] != self.identity and not self._expired())

    def _observe(self, lease: Any) -> None:
        spec = lease.spec
        record = (spec.holder_identity, str(spec.renew_time), lease.metadata.resource_version)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        self._observed_duration = spec.lease_duration_seconds or self.duration

    def _expired(self) -> bool:
        """The observed record has not changed for its lease duration (by our clock)."""
        return time.monotonic() - self._observed_at > self._observed_duration

    def _read(self) -> Any:
        return self._api.read_namespaced_lease(self.name, self.namespace, **self._deadline)

    def _replace(self, lease: Any) -> None:
        self._api.replace_namespaced_lease(self.name, self.namespace, lease, **self._deadline)

    def _try_acquire_or_renew(self) -> bool:
        from kubernetes.client import V1Lease, V1LeaseSpec, V1ObjectMeta
        from kubernetes.client.exceptions import ApiException

        now = _now()
        try:
            lease = self._read()
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = V1Lease(
                api_version="coordination.k8s.io/v1", kind="Lease",
                metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=V1LeaseSpec(holder_identity=self.identity,
                                 lease_duration_seconds=self.duration,
                                 acquire_time=now, renew_time=now, lease_transitions=0),
            )
            try:
                self._api.create_namespaced_lease(self.namespace, body, **self._deadline)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False  # another candidate created it first
                raise
            return True

        self._observe(lease)
        spec = lease.spec
        holder = spec.holder_identity
        if holder and holder != self.identity and not self._expired():
            return False
        if holder != self.identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
            spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration
        try:
            self._replace(lease)
        except ApiException as exc:
            if exc.status == 409:
                return False  # someone else updated it since we read it
            raise
        return True

    def _release(self) -> None:
        """Give the lease up on shutdown so a standby takes over at once."""
        try:
            lease = self._read()
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = _now() - timedelta(seconds=self.duration + 1)
                self._replace(lease)
                log.info("leader election: released lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("leader election: could not release the lease (%s); it will expire",
                        exc)
        self._leader = False

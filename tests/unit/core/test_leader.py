"""Leader election on a Lease, against the project's Kubernetes API stand-in.

The API server is real (tools/kube, in-process on 127.0.0.1: resourceVersion
conflicts and all); time is not: each candidate gets a hand-wound monotonic
clock, so "the record did not change for the lease duration" is a step, not
a sleep.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.config import Settings
from agent.errors import PermissionDeniedError
from agent.leader import LEASE_API, LeaseLeadership, lease_client
from agent.plugins.kubernetes.client import KubeClient
from tests.fixtures.kube import KubeAPI, start_kube_api

DURATION = 15


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _settings(kubeconfig: Path, identity: str) -> Settings:
    return Settings.model_validate({"runtime": {"leader_election": {
        "enabled": True, "identity": identity, "lease_duration_seconds": DURATION,
        "renew_deadline_seconds": 10, "retry_period_seconds": 2}},
        "plugin": {"kubernetes": {"kubeconfig": str(kubeconfig), "namespace": "default"}}})


def _candidate(kube_api: KubeAPI, identity: str) -> tuple[LeaseLeadership, Clock]:
    clock = Clock()
    settings = _settings(kube_api.kubeconfig, identity)
    return LeaseLeadership(settings, lease_client(settings), clock=clock), clock


def _lease(kube_api: KubeAPI) -> dict:
    kube = KubeClient(_settings(kube_api.kubeconfig, "reader").plugin.kubernetes)
    try:
        lease = kube.get(LEASE_API, "Lease", "management-agent", "default")
        assert lease is not None
        return lease
    finally:
        kube.close()


def test_the_first_candidate_creates_the_lease_and_leads(kube_api: KubeAPI) -> None:
    a, _ = _candidate(kube_api, "agent-a")
    assert a.tick() and a.is_leader()
    spec = _lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "agent-a"
    assert spec["leaseDurationSeconds"] == DURATION
    assert spec["renewTime"].endswith("Z")


def test_a_standby_waits_while_the_leader_renews(kube_api: KubeAPI) -> None:
    a, _ = _candidate(kube_api, "agent-a")
    b, b_clock = _candidate(kube_api, "agent-b")
    assert a.tick()
    for _ in range(5):  # b's clock runs past the lease duration, but a keeps renewing
        assert b.tick() and not b.is_leader()
        b_clock.now += DURATION
        assert a.tick()
    assert _lease(kube_api)["spec"]["holderIdentity"] == "agent-a"


def test_a_standby_takes_over_a_lease_unchanged_for_its_duration(kube_api: KubeAPI) -> None:
    a, _ = _candidate(kube_api, "agent-a")
    b, b_clock = _candidate(kube_api, "agent-b")
    assert a.tick()
    b.tick()  # b sees a's record...
    b_clock.now += DURATION - 1
    b.tick()
    assert not b.is_leader()  # ...not yet expired by b's own clock
    b_clock.now += 2
    b.tick()
    assert b.is_leader() and b.transitions == 1
    spec = _lease(kube_api)["spec"]
    assert spec["holderIdentity"] == "agent-b" and spec["leaseTransitions"] == 1


def test_a_leader_that_sees_another_holder_steps_down(kube_api: KubeAPI) -> None:
    a, _ = _candidate(kube_api, "agent-a")
    b, b_clock = _candidate(kube_api, "agent-b")
    assert a.tick()
    b.tick()
    b_clock.now += DURATION + 1
    b.tick()  # a was paused (say a long GC): b took over
    assert b.is_leader()
    assert a.tick() is False and not a.is_leader()


def test_a_leader_that_cannot_renew_steps_down_after_the_renew_deadline(
        kube_api: KubeAPI, tmp_path: Path) -> None:
    from tools.kube.__main__ import write_kubeconfig

    a, a_clock = _candidate(kube_api, "agent-a")
    assert a.tick()
    gone = tmp_path / "gone"  # from now on the API server is unreachable (a closed port)
    write_kubeconfig(gone, "http://127.0.0.1:9")
    a._kube.close()
    a._kube = lease_client(_settings(gone, "agent-a"))
    a_clock.now += 5
    assert a.tick() and a.is_leader()  # within the renew deadline: still leading
    a_clock.now += 6
    assert not a.is_leader()  # never claims past the deadline, even before the next round
    assert a.tick() is False


def test_stop_releases_the_lease_so_a_standby_leads_at_once(kube_api: KubeAPI) -> None:
    a, _ = _candidate(kube_api, "agent-a")
    b, _ = _candidate(kube_api, "agent-b")
    assert a.tick()
    b.tick()
    assert not b.is_leader()
    a.stop()
    assert _lease(kube_api)["spec"].get("holderIdentity") is None
    b.tick()
    assert b.is_leader()


def test_lease_calls_go_through_kubeclient_without_inner_retries(kube_api: KubeAPI) -> None:
    settings = _settings(kube_api.kubeconfig, "agent-a")
    kube = lease_client(settings)
    try:
        assert isinstance(kube, KubeClient)
        assert kube.settings.api_retries == 0
        assert kube.settings.api_timeout_seconds == settings.runtime.leader_election.\
            retry_period_seconds
    finally:
        kube.close()


def test_a_forbidden_lease_names_the_missing_permission(tmp_path: Path) -> None:
    """KubeClient's 403 hint reaches leader election: a service account without a Role
    (the stand-in enforces RBAC for its restricted tokens) is told what to grant."""
    from tools.kube.__main__ import write_kubeconfig

    api = start_kube_api(tmp_path / "kube", restricted={"sa-token": ("default", "agent")})
    try:
        kubeconfig = tmp_path / "restricted"
        write_kubeconfig(kubeconfig, api.url, token="sa-token", ca_cert=api.server.ca_cert)
        settings = _settings(kubeconfig, "agent-a")
        a = LeaseLeadership(settings, lease_client(settings), clock=Clock())
        with pytest.raises(PermissionDeniedError, match=re.escape(
                "cannot get leases.coordination.k8s.io in namespace default: grant it in "
                "the chart's Role")):
            a._try_acquire_or_renew()
        assert a.tick() and not a.is_leader()  # the loop keeps going (and logs the outage)
    finally:
        api.server.shutdown_all()

"""Two agent replicas, one leader: leader election on a coordination.k8s.io/v1 Lease.

Real processes and servers only: two `management-agent run` processes
(filesystem plugin with git, so that a git hook can hold an action in the
middle of its work and log when each execution starts and ends), the
reference control plane process, and the Kubernetes API stand-in (fixture
`kube_api`) holding the Lease. Leader changes are forced by SIGKILL, SIGTERM
and by another identity taking the Lease over through the API.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent_process import AgentProcess, wait_for
from tests.fixtures.controlplane import ControlPlaneServer
from tests.fixtures.kube import KubeAPI

pytestmark = pytest.mark.integration

LEASE = "management-agent"
NAMESPACE = "default"


def election(identity: str) -> dict[str, Any]:
    return {"enabled": True, "namespace": NAMESPACE, "lease_name": LEASE, "identity": identity,
            "lease_duration_seconds": 5, "renew_deadline_seconds": 3,
            "retry_period_seconds": 1}


class Replica:
    """One agent replica: a work directory with a git output and a hook, restartable."""

    def __init__(self, name: str, tmp_path: Path, cp: ControlPlaneServer, env: tuple[str, str],
                 kube: KubeAPI, agents: list[AgentProcess]) -> None:
        self.name, self.tmp_path, self.cp, self.env, self.kube = name, tmp_path, cp, env, kube
        self.agents = agents
        self.workdir = tmp_path / name
        self.workdir.mkdir()
        self.output = self.workdir / "deployments"
        self.output.mkdir()
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.output)], check=True)
        self.generation = 0
        self.agent: AgentProcess | None = None

    def hook(self, name: str, script: str) -> Path:
        path = self.output / ".git" / "hooks" / name
        path.write_text("#!/bin/sh\n" + script)
        path.chmod(0o755)
        return path

    def start(self) -> AgentProcess:
        self.generation += 1
        os.environ["HA_AGENT_TAG"] = f"{self.name}#{self.generation}"  # inherited by the hooks
        try:
            agent = AgentProcess(
                self.workdir, self.cp.url, self.env[0], self.env[1],
                plugin__filesystem__git={"enabled": True},
                runtime__leader_election=election(self.name),
                plugin__kubernetes__kubeconfig=str(self.kube.kubeconfig))
            self.agents.append(agent)
            self.agent = agent.start()
        finally:
            os.environ.pop("HA_AGENT_TAG", None)
        return agent

    @property
    def pid(self) -> int:
        assert self.agent is not None and self.agent.process is not None
        return self.agent.process.pid

    def alive(self) -> bool:
        return bool(self.agent and self.agent.process and self.agent.process.poll() is None)

    def ready(self) -> int:
        return self.agent.health("/readyz") if self.alive() and self.agent else 0

    def commits(self) -> list[str]:
        out = subprocess.run(["git", "-C", str(self.output), "log", "--format=%s"],
                             capture_output=True, text=True, check=False).stdout
        return out.splitlines()


def lease_holder(kube: KubeAPI) -> tuple[str | None, int]:
    from kubernetes import client

    lease = client.CoordinationV1Api(kube.client()).read_namespaced_lease(LEASE, NAMESPACE)
    spec = lease.spec
    assert spec is not None
    return spec.holder_identity, spec.lease_transitions or 0


def steal_lease(kube: KubeAPI, thief: str = "intruder") -> None:
    """Another identity takes the Lease over (what a third replica or an operator could do)."""
    from datetime import UTC, datetime

    from kubernetes import client

    api = client.CoordinationV1Api(kube.client())
    lease = api.read_namespaced_lease(LEASE, NAMESPACE)
    spec = lease.spec
    assert spec is not None
    spec.holder_identity = thief
    spec.renew_time = datetime.now(UTC)
    spec.lease_transitions = (spec.lease_transitions or 0) + 1
    api.replace_namespaced_lease(LEASE, NAMESPACE, lease)


def completions(cp: ControlPlaneServer, env_id: str, deployment: str) -> int:
    return sum(1 for e in cp.admin.events(env_id, deployment)
               if e["source"] == "server" and "completed" in e["message"])


def test_only_the_leader_claims_and_a_killed_leader_is_replaced(
        control_plane: ControlPlaneServer, kube_api: KubeAPI, tmp_path: Path,
        agents: list[AgentProcess]) -> None:
    env = control_plane.create_environment("ha")
    a = Replica("agent-a", tmp_path, control_plane, env, kube_api, agents)
    b = Replica("agent-b", tmp_path, control_plane, env, kube_api, agents)
    marker, release = tmp_path / "a-in-hook", tmp_path / "a-release"
    hook = a.hook("pre-commit", f"touch {marker}\n"
                  f"while [ ! -e {release} ]; do sleep 0.1; done\nexit 1\n")

    a.start()
    wait_for(lambda: a.ready() == 200, what="agent-a to lead")
    b.start()
    wait_for(lambda: b.agent is not None and "candidate agent-b" in b.agent.log(),
             what="agent-b to stand by")
    time.sleep(3)  # several retry periods: b must stay a standby
    assert b.ready() == 503 and a.ready() == 200
    assert lease_holder(kube_api)[0] == "agent-a"

    action = control_plane.deploy(env[0], "slow", "m1")
    wait_for(marker.exists, what="the leader to reach the commit")
    view = control_plane.admin.get_action(env[0], action["id"])
    assert view["attempt"] == 1 and view["lease_owner"].startswith("agent-a-")

    a.agent.signal(signal.SIGKILL)  # type: ignore[union-attr]
    hook.unlink()
    release.touch()  # the killed agent's orphaned commit aborts
    done = control_plane.admin.wait_action(env[0], action["id"], timeout=90)
    assert done["state"] == "completed" and done["result"]["status"] == "passing"
    assert done["attempt"] == 2 and done["completed_by"].startswith("agent-b-")
    assert completions(control_plane, env[0], "slow") == 1
    assert lease_holder(kube_api)[0] == "agent-b"
    wait_for(lambda: b.ready() == 200, what="agent-b ready as the new leader")
    assert [c for c in b.commits() if "slow" in c] == ["start slow: model m1"]
    assert a.commits() == []


def test_forced_leader_changes_never_run_one_action_twice_at_once(
        control_plane: ControlPlaneServer, kube_api: KubeAPI, tmp_path: Path,
        agents: list[AgentProcess]) -> None:
    env = control_plane.create_environment("ha")
    journal = tmp_path / "executions.log"
    replicas = [Replica(name, tmp_path, control_plane, env, kube_api, agents)
                for name in ("agent-a", "agent-b")]
    for replica in replicas:
        # the commit of every execution takes 1.5 s and is logged with the process' tag
        replica.hook("prepare-commit-msg",
                     f'msg=$(head -n 1 "$1")\n'
                     f'echo "start $HA_AGENT_TAG $(date +%s.%N) $msg" >> {journal}\n'
                     f"sleep 1.5\n"
                     f'echo "end $HA_AGENT_TAG $(date +%s.%N) $msg" >> {journal}\n')
    first, second = replicas
    first.start()
    wait_for(lambda: first.ready() == 200, what="first leader")
    second.start()
    wait_for(lambda: second.ready() == 503, what="second replica standing by")

    deployed: list[str] = []
    actions: list[str] = []

    def enqueue(batch: int) -> None:
        for _ in range(batch):
            name = f"d{len(deployed):02d}"
            actions.append(control_plane.deploy(env[0], name, "m1")["id"])
            deployed.append(name)

    def executing() -> int:
        return journal.read_text().count("start ") if journal.exists() else 0

    def leader() -> Replica:
        return wait_for(lambda: next((r for r in replicas if r.ready() == 200), None),
                        timeout=60, what="a leader")

    forced = ["steal", "term", "kill", "steal", "kill"]
    for how in forced:
        current = leader()
        other = next(r for r in replicas if r is not current)
        before = executing()
        enqueue(4)
        wait_for(lambda before=before: executing() > before, what="an execution in flight")
        if how == "steal":
            steal_lease(kube_api)
            assert current.agent is not None and current.agent.process is not None
            current.agent.process.wait(timeout=60)  # it steps down and exits
        elif how == "term":
            assert current.agent is not None
            assert current.agent.signal(signal.SIGTERM) == 0
        else:
            assert current.agent is not None
            current.agent.signal(signal.SIGKILL)
        wait_for(lambda other=other: other.ready() == 200, timeout=60,
                 what=f"the standby to take over after {how}")
        current.start()  # back as a standby
        wait_for(lambda current=current: current.agent is not None
                 and "candidate" in current.agent.log(), what="restarted replica")

    for action_id in actions:
        done = control_plane.admin.wait_action(env[0], action_id, timeout=120)
        assert done["state"] == "completed" and done["result"]["status"] == "passing"
    for name in deployed:
        assert completions(control_plane, env[0], name) == 1, name
    assert lease_holder(kube_api)[1] >= len(forced)

    # no two executions of one deployment's action ever overlapped in time
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    open_: dict[tuple[str, str], float] = {}
    for line in journal.read_text().splitlines():
        kind, tag, stamp, *message = line.split()
        deployment = message[1].rstrip(":")
        if kind == "start":
            open_[(tag, deployment)] = float(stamp)
        else:
            spans[deployment].append((open_.pop((tag, deployment)), float(stamp), tag))
    for deployment, runs in spans.items():
        runs.sort()
        for (_, end, tag), (start, _, next_tag) in itertools.pairwise(runs):
            assert start >= end, f"{deployment}: {tag} and {next_tag} executed it at once"
    reexecuted = {d for d, runs in spans.items() if len(runs) > 1}
    print(f"\n{len(deployed)} actions, {len(forced)} forced leader changes, "
          f"{len(reexecuted)} re-executed after a crash: {sorted(reexecuted)}")

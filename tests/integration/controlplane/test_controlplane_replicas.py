"""Several control-plane processes on one database (the chart's replicas), on each backend.

Agents talk to different replicas at once; the database, not a process, must
decide who gets a lease, keep each deployment's actions in order and make a
repeated completion harmless. Migrations run at every start, concurrently.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.controlplane.http import NativeControlPlane
from agent.controlplane.server.engine import database_url as to_url
from agent.controlplane.server.engine import open_engine
from agent.controlplane.server.store import Conflict, Store
from agent.model import ActionResult, DeploymentState, Status
from tests.fixtures.controlplane import ControlPlaneServer, postgres_server, race_claims

pytestmark = pytest.mark.integration

PASSING = ActionResult(status=Status.PASSING, state=DeploymentState.READY)


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[list[ControlPlaneServer]]:
    """Two started control planes on one database, sharing one admin token."""
    first = ControlPlaneServer(tmp_path / "replica-0", database_url=database_url)
    servers = [first, ControlPlaneServer(tmp_path / "replica-1", database_url=database_url,
                                         admin_token=first.admin_token)]
    try:
        for server in servers:  # both migrate the (empty) database at the same moment
            server.start(wait=False)
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.close()


def test_two_replicas_hand_each_action_to_exactly_one_of_many_racing_agents(
    replicas: list[ControlPlaneServer],
) -> None:
    env_id, token = replicas[0].create_environment()
    action_ids = [replicas[n % 2].deploy(env_id, f"d{n}")["id"] for n in range(10)]
    agents = [NativeControlPlane(replicas[n % 2].agent_settings(env_id, token),
                                 agent_id=f"agent-{n}") for n in range(6)]
    try:
        winners = race_claims(agents, action_ids)
        assert all(len(names) == 1 for names in winners.values()), winners
        for action_id in action_ids:
            seen = [replica.admin.get_action(env_id, action_id) for replica in replicas]
            assert [a["attempt"] for a in seen] == [1, 1]
            assert seen[0]["lease_owner"] == seen[1]["lease_owner"] == winners[action_id][0]
    finally:
        for agent in agents:
            agent.close()


def test_replicas_deliver_a_deployments_actions_in_order_and_complete_once(
    replicas: list[ControlPlaneServer],
) -> None:
    env_id, token = replicas[0].create_environment()
    start = replicas[0].deploy(env_id, "d1")["id"]
    stop = replicas[1].admin.stop(env_id, "d1")["action"]["id"]
    first = NativeControlPlane(replicas[0].agent_settings(env_id, token), agent_id="a1")
    second = NativeControlPlane(replicas[1].agent_settings(env_id, token), agent_id="a2")
    try:
        assert [ref.id for ref in second.pending()] == [start]  # the stop waits its turn
        first.claim(start, lease_seconds=300)
        assert [ref.id for ref in second.pending()] == []
        first.complete(start, PASSING)
        first.complete(start, PASSING)  # a retried completion is a harmless duplicate
        assert [ref.id for ref in second.pending()] == [stop]
        assert replicas[1].admin.get_deployment(env_id, "d1")["state"] == "ready"
        completions = [e for e in replicas[1].admin.events(env_id, "d1")
                       if "completed" in e["message"]]
        assert len(completions) == 1
    finally:
        first.close()
        second.close()


def test_two_store_instances_serialise_claims_on_one_database(database_url: str) -> None:
    stores = [Store(database_url), Store(database_url)]
    stores[0].create_environment("prod")
    action_id = stores[1].create_deployment("prod", {"id": "d1", "model": {"id": "m"}})["id"]
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def claim(n: int) -> None:
        barrier.wait()
        try:
            stores[n % 2].claim("prod", action_id, f"agent-{n}", 60)
            outcomes.append("won")
        except Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["lease_conflict"] * 7 + ["won"]
    for store in stores:
        store.close()


def test_schema_is_at_the_newest_migration_after_start(database_url: str) -> None:
    store = Store(database_url)
    engine = open_engine(to_url(database_url))
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    engine.dispose()
    store.close()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from agent.controlplane.server.engine import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert version == ScriptDirectory.from_config(config).get_current_head()


OLD_SCHEMA = """
CREATE TABLE environments (id TEXT PRIMARY KEY, name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, heartbeat_at REAL,
  heartbeat_agent_id TEXT, heartbeat_json TEXT);
CREATE TABLE deployments (environment_id TEXT NOT NULL REFERENCES environments(id),
  id TEXT NOT NULL, spec_json TEXT NOT NULL, desired TEXT NOT NULL, created_at REAL NOT NULL,
  updated_at REAL NOT NULL, result_json TEXT, result_at REAL, result_action_id TEXT,
  PRIMARY KEY (environment_id, id));
CREATE TABLE actions (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
  environment_id TEXT NOT NULL REFERENCES environments(id), deployment_id TEXT,
  type TEXT NOT NULL, payload_json TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
  attempt INTEGER NOT NULL DEFAULT 0, lease_owner TEXT, lease_expires_at REAL,
  created_at REAL NOT NULL, completed_at REAL, completed_by TEXT, result_json TEXT);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, environment_id TEXT NOT NULL,
  deployment_id TEXT, action_id TEXT, event_id TEXT UNIQUE, source TEXT NOT NULL,
  agent_id TEXT, level TEXT NOT NULL, message TEXT NOT NULL, details_json TEXT NOT NULL,
  created_at REAL NOT NULL);
INSERT INTO environments VALUES ('prod', 'prod', 'x', 1.0, NULL, NULL, NULL);
INSERT INTO deployments VALUES ('prod', 'd1', '{"id":"d1"}', 'running', 1.0, 1.0,
  NULL, NULL, NULL);
INSERT INTO actions (id, environment_id, deployment_id, type, payload_json, created_at)
  VALUES ('a-1', 'prod', 'd1', 'deployment_start', '{}', 1.0);
"""


def test_a_database_from_before_migrations_is_adopted_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    store = Store(path)
    assert [d["id"] for d in store.list_deployments("prod")] == ["d1"]
    assert store.create_deployment("prod", {"id": "d2", "model": {"id": "m"}})["id"] == "a-2"
    store.close()


def test_a_wrong_database_password_stops_the_server_with_a_clear_message(
    tmp_path: Path,
) -> None:
    user_host = postgres_server().split("://", 1)[1].split("@", 1)[1]
    wrong = f"postgresql://postgres:not-the-password-42@{user_host}"
    server = ControlPlaneServer(tmp_path, database_url=wrong)
    with pytest.raises(RuntimeError, match="control plane exited") as failed:
        server.start()
    server.close()
    output = str(failed.value)
    assert "cannot open the database postgresql+psycopg://postgres:***@" in output
    assert "password authentication failed" in output
    assert "not-the-password-42" not in output

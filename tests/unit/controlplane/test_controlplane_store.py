"""The SQLite store on its own: atomic claims under concurrency, across connections."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.controlplane.server.store import Conflict, Store


def test_concurrent_claims_from_two_store_instances_have_exactly_one_winner(
    tmp_path: Path,
) -> None:
    # two Store objects on one file behave like two server processes
    stores = [Store(tmp_path / "cp.db"), Store(tmp_path / "cp.db")]
    stores[0].create_environment("prod")
    action_ids = [stores[0].create_deployment("prod", {"id": f"d{i}", "model": {"id": "m"}})["id"]
                  for i in range(5)]
    for action_id in action_ids:
        barrier = threading.Barrier(12)
        winners: list[str] = []
        conflicts: list[str] = []

        def claim(agent: str, store: Store, action_id: str = action_id,
                  barrier: threading.Barrier = barrier, winners: list[str] = winners,
                  conflicts: list[str] = conflicts) -> None:
            barrier.wait()
            try:
                store.claim("prod", action_id, agent, 60)
                winners.append(agent)
            except Conflict as exc:
                conflicts.append(exc.code)

        threads = [threading.Thread(target=claim, args=(f"agent-{n}", stores[n % 2]))
                   for n in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(winners) == 1
        assert conflicts == ["lease_conflict"] * 11
        assert stores[1].get_action("prod", action_id)["lease_owner"] == winners[0]


def test_raw_payload_keeps_its_malformed_fields_but_not_the_server_ones(tmp_path: Path) -> None:
    store = Store(tmp_path / "cp.db")
    store.create_environment("prod")
    action = store.enqueue_raw("prod", {"type": 5, "deployment_id": "d1", "id": "forged",
                                        "attempt": 99, "extra": True})
    assert action["type"] == "5"
    assert store.pending("prod") == [{"id": action["id"], "type": "5", "deployment_id": "d1"}]
    payload = store.claim("prod", action["id"], "agent-1", 60)
    assert (payload["id"], payload["attempt"], payload["type"], payload["extra"]) == (
        action["id"], 1, 5, True)


def test_unknown_environment_is_not_found(tmp_path: Path) -> None:
    store = Store(tmp_path / "cp.db")
    with pytest.raises(Exception, match="environment 'nope' not found"):
        store.create_deployment("nope", {"id": "d1", "model": {"id": "m"}})


@pytest.mark.parametrize(("target", "driver"), [
    ("postgresql://cp:pw@db:5432/cp", "postgresql+psycopg"),
    ("postgres://cp:pw@db/cp", "postgresql+psycopg"),
    ("postgresql+psycopg://cp:pw@db/cp", "postgresql+psycopg"),
    ("sqlite:////var/lib/cp.db", "sqlite"),
])
def test_database_urls_get_the_psycopg_driver(target: str, driver: str) -> None:
    from agent.controlplane.server.engine import database_url

    assert database_url(target).drivername == driver


def test_a_plain_path_is_a_sqlite_file(tmp_path: Path) -> None:
    from agent.controlplane.server.engine import database_url

    url = database_url(tmp_path / "cp.db")
    assert (url.drivername, url.database) == ("sqlite", str(tmp_path / "cp.db"))


def test_other_databases_are_refused() -> None:
    from agent.controlplane.server.engine import database_url

    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        database_url("mysql://u:p@db/cp")


def test_serve_names_the_database_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse

    from agent.controlplane.server.cli import _database

    url_file = tmp_path / "url"
    url_file.write_text("postgresql://cp:s3cret-pw@db.example:5432/cp\n")
    monkeypatch.setenv("MGMT_AGENT_CP_DATABASE_URL_FILE", str(url_file))
    target, shown = _database(argparse.Namespace(database_url=None, db=tmp_path / "x.db"))
    assert target == "postgresql://cp:s3cret-pw@db.example:5432/cp"
    assert "s3cret" not in shown and "db.example:5432/cp" in shown


def test_reopening_a_database_keeps_its_state_and_schema_version(tmp_path: Path) -> None:
    first = Store(tmp_path / "cp.db")
    first.create_environment("prod")
    first.close()
    again = Store(tmp_path / "cp.db")  # migrate() is idempotent
    assert [env["id"] for env in again.list_environments()] == ["prod"]


def test_an_unwritable_sqlite_location_says_what_to_check(tmp_path: Path) -> None:
    from agent.controlplane.server.db import DatabaseUnavailable

    (tmp_path / "a-file").write_text("")
    with pytest.raises(DatabaseUnavailable, match="directory exists and is writable"):
        Store(tmp_path / "a-file" / "cp.db")


def test_a_new_sqlite_file_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    store = Store(tmp_path / "new-dir" / "cp.db")
    store.create_environment("prod")
    assert oct((tmp_path / "new-dir").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "new-dir" / "cp.db").stat().st_mode & 0o777) == "0o600"
    store.close()

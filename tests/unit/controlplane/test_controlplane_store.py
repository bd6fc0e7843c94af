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

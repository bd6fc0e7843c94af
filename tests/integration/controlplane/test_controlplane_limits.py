"""Issue 14, items 11 and 15, against the real `control-plane serve` process (uvicorn).

What an attacker holding one agent token (or a local user of the host) tried:
a 30 MB event and a 21 MB heartbeat were accepted and grew the server from 61
to 191 MB; any agent could append events to an action it did not hold; the
unvalidated `actions:raw` endpoint was always served; the SQLite file was
world-readable. Each runs on both backends (conftest.py).
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.controlplane import ControlPlaneServer

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _rss_kib(server: ControlPlaneServer) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _agent_url(cp: ControlPlaneServer, env_id: str, path: str) -> str:
    return f"{cp.url}/api/v1/environments/{env_id}{path}"


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"agent_id": "a", "event": {"message": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}}'


def test_oversized_bodies_are_refused_with_413_without_being_buffered(
        control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    env_id, token = cp.create_environment()
    action = cp.deploy(env_id)["id"]
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    before = _rss_kib(cp)

    event = b'{"agent_id": "a", "event": {"message": "' + b"x" * (30 * MIB) + b'"}}'
    answer = requests.post(_agent_url(cp, env_id, f"/actions/{action}/events"), data=event,
                           headers=auth, timeout=60)
    assert answer.status_code == 413
    assert answer.json() == {
        "error": "request_too_large",
        "detail": f"request body too large (Content-Length {len(event)}); the limit is "
                  f"{MIB} bytes (control-plane serve --max-body-bytes)"}

    heartbeat = b'{"status": {"agent_version": "' + b"1" * (21 * MIB) + b'", "plugin": "k"}}'
    answer = requests.put(_agent_url(cp, env_id, "/heartbeat"), data=heartbeat, headers=auth,
                          timeout=60)
    assert (answer.status_code, answer.json()["error"]) == (413, "request_too_large")

    # no Content-Length: chunked transfer, counted while it streams in
    answer = requests.post(_agent_url(cp, env_id, f"/actions/{action}/events"),
                           data=_chunks(30 * MIB), headers=auth, timeout=60)
    assert answer.status_code == 413
    assert answer.json()["detail"].startswith(f"request body too large (more than {MIB} bytes)")

    grown = _rss_kib(cp) - before
    assert grown < 16 * 1024, f"the server grew by {grown} KiB"  # was 130 MB
    assert [e for e in cp.admin.events(env_id) if e["source"] == "agent"] == []
    assert requests.get(f"{cp.url}/api/v1/healthz", timeout=10).status_code == 200


@pytest.mark.control_plane(max_body_bytes=64 * 1024)
def test_the_body_limit_is_configurable_and_bodies_below_it_work(
        control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    env_id, token = cp.create_environment()
    action = cp.deploy(env_id)["id"]
    auth = {"Authorization": f"Bearer {token}"}
    url = _agent_url(cp, env_id, f"/actions/{action}/events")
    requests.post(_agent_url(cp, env_id, f"/actions/{action}/claim"), json={"agent_id": "a"},
                  headers=auth, timeout=10).raise_for_status()
    fits = requests.post(url, json={"agent_id": "a", "event": {"message": "x" * 16_000}},
                         headers=auth, timeout=10)
    assert fits.status_code == 204, fits.text
    big = {"agent_id": "a", "event": {"message": "m", "details": {"k": "x" * 70_000}}}
    refused = requests.post(url, json=big, headers=auth, timeout=10)
    assert refused.status_code == 413
    assert "the limit is 65536 bytes" in refused.json()["detail"]


def test_an_agent_without_the_lease_cannot_add_events_or_results(
        control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    env_id, token = cp.create_environment()
    action = cp.deploy(env_id)["id"]
    auth = {"Authorization": f"Bearer {token}"}

    def post(verb: str, body: dict[str, object]) -> requests.Response:
        return requests.post(_agent_url(cp, env_id, f"/actions/{action}/{verb}"), json=body,
                             headers=auth, timeout=10)

    forged = {"message": "model deployed, all good"}
    assert post("events", {"agent_id": "intruder", "event": forged}).status_code == 409
    assert post("claim", {"agent_id": "holder"}).status_code == 200
    refused = post("events", {"agent_id": "intruder", "event": forged})
    assert (refused.status_code, refused.json()["error"]) == (409, "lease_lost")
    assert post("events", {"event": forged}).status_code == 422  # agent_id is required
    result = {"status": "passing", "state": "ready"}
    assert post("complete", {"agent_id": "intruder", "result": result}).status_code == 409
    assert post("events", {"agent_id": "holder", "event": {"message": "fetching"}}
                ).status_code == 204
    assert post("complete", {"agent_id": "holder", "result": result}).status_code == 200
    late = post("events", {"agent_id": "holder", "event": forged})
    assert (late.status_code, late.json()["error"]) == (409, "already_completed")
    messages = [e["message"] for e in cp.admin.events(env_id) if e["source"] == "agent"]
    assert messages == ["fetching"]


def test_the_raw_action_endpoint_is_not_served_by_default(
        control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    env_id, _ = cp.create_environment()
    answer = requests.post(f"{cp.url}/api/v1/admin/environments/{env_id}/actions:raw",
                           json={"type": "deployment_explode"}, timeout=10,
                           headers={"Authorization": f"Bearer {cp.admin_token}"})
    assert (answer.status_code, answer.json()["error"]) == (404, "not_found")
    paths = requests.get(f"{cp.url}/openapi.json", timeout=10).json()["paths"]
    assert not [path for path in paths if "raw" in path]


@pytest.mark.control_plane(test_endpoints=True)
def test_the_raw_action_endpoint_is_served_when_enabled(
        control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    env_id, _ = cp.create_environment()
    created = cp.admin.enqueue_raw(env_id, {"type": "deployment_explode"})
    assert cp.admin.get_action(env_id, created["id"])["type"] == "deployment_explode"
    assert "test endpoints enabled (actions:raw)" in cp.log()


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_the_sqlite_files_are_private_to_the_server_user(tmp_path: Path) -> None:
    directory = tmp_path / "state"  # missing: the server creates it
    server = ControlPlaneServer(tmp_path / "work", database_url=str(directory / "cp.db"))
    try:
        server.start()
        env_id, _ = server.create_environment()
        # hold a connection, so that SQLite keeps its -wal and -shm files while the server writes
        with sqlite3.connect(directory / "cp.db") as held:
            held.execute("SELECT count(*) FROM environments").fetchone()
            server.deploy(env_id)
            files = sorted(path.name for path in directory.iterdir())
            assert files == ["cp.db", "cp.db-shm", "cp.db-wal"]
            assert {name: _mode(directory / name) for name in files} == dict.fromkeys(
                files, "0o600")
        assert _mode(directory) == "0o700"
    finally:
        server.close()


def test_an_existing_world_readable_database_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)  # world-writable, as some volume provisioners make it
    (directory / "cp.db").touch(mode=0o644)  # an empty file is an empty SQLite database
    (directory / "cp.db").chmod(0o644)
    server = ControlPlaneServer(tmp_path / "work", database_url=str(directory / "cp.db"))
    try:
        server.start()
        server.create_environment()
        assert _mode(directory / "cp.db") == "0o600"
        assert _mode(directory) == "0o775"  # we own it: no longer world-writable
    finally:
        server.close()

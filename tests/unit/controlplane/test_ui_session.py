"""Dashboard sessions: who a cookie stays valid for (in-process app; the browser tests in
tests/integration/opsui cover the same cookie through Chromium)."""

from __future__ import annotations

import warnings
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from agent.controlplane.server.app import ServerConfig, create_app
from agent.controlplane.server.ui.session import COOKIE


def _login(db: Path, admin: str, read: str, token: str) -> tuple[TestClient, str]:
    client = TestClient(create_app(ServerConfig(db, admin, read_token=read)))
    response = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client, response.cookies[COOKIE]


def _accepted(db: Path, admin: str, read: str, cookie: str) -> bool:
    client = TestClient(create_app(ServerConfig(db, admin, read_token=read)))
    client.cookies.set(COOKIE, cookie, path="/ui")
    return client.get("/ui", follow_redirects=False).status_code == 200


def test_rotating_the_read_token_ends_read_sessions(tmp_path: Path) -> None:
    db = tmp_path / "cp.db"
    _, cookie = _login(db, "admin-token-1", "read-token-1", "read-token-1")
    assert _accepted(db, "admin-token-1", "read-token-1", cookie)
    assert not _accepted(db, "admin-token-1", "read-token-2", cookie)  # read token rotated
    assert not _accepted(db, "admin-token-2", "read-token-1", cookie)  # admin token rotated

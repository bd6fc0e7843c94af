"""The reference control plane's database (SQLite or PostgreSQL): errors and shared rows.

Every operation runs in one transaction of `engine.transaction`; writes are
serialised by the database (SQLite's `BEGIN IMMEDIATE`, a PostgreSQL advisory
lock), so concurrent requests and several server processes on one database
agree, never relying on Python state. The schema is Alembic's (`migrations/`).

Times are stored as epoch seconds and returned as ISO 8601 UTC strings. The
layers above speak plain dicts shaped like the API's responses:
`leases.ActionQueue` (actions and their leases, events) and `store.Store`
(environments, deployments, heartbeats).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from agent.controlplane.server.engine import (
    Record,
    Tx,
    database_url,
    migrate,
    open_engine,
    transaction,
)


class DatabaseUnavailable(Exception):
    """The database cannot be opened or reached at start (the message says what to check)."""


class StoreError(Exception):
    """A request the store refuses; `status` and `code` become the HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(StoreError):
    """The environment, deployment or action does not exist."""

    status = 404
    code = "not_found"


class Conflict(StoreError):
    """The request contradicts the current state (lease held, already exists, ...)."""

    status = 409

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def hash_token(token: str) -> str:
    """What is stored instead of an agent token (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random agent token."""
    return "mat_" + secrets.token_urlsafe(32)


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC string."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def from_json(text: str | None) -> Any:
    return json.loads(text) if text else None


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class Database:
    """Connections, transactions and the row helpers every layer uses."""

    def __init__(self, target: Path | str, clock: Callable[[], float] = time.time) -> None:
        """`target`: a SQLite file path, or a `sqlite:///` or `postgresql://` URL."""
        self.url = database_url(target)
        self.clock = clock
        try:
            self.engine = open_engine(self.url)
            migrate(self.engine)
        except (OperationalError, OSError) as exc:
            orig = getattr(exc, "orig", None) or exc
            reason = str(orig).strip().splitlines()[0] or type(exc).__name__
            hint = ("check that its directory exists and is writable by the server's user "
                    "(in a pod: a volume with the pod's fsGroup)" if self.backend == "sqlite"
                    else "check host, port, user, password and that the database exists")
            where = self.url.render_as_string(hide_password=True)
            raise DatabaseUnavailable(f"cannot open the database {where}: {reason}; {hint}"
                                      ) from None

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.url.get_backend_name()

    def close(self) -> None:
        """Close pooled connections (a server process does this at exit)."""
        self.engine.dispose()

    @contextmanager
    def _tx(self, write: bool = False) -> Iterator[Tx]:
        with transaction(self.engine, write) as conn:
            yield conn

    def _env_row(self, conn: Tx, env_id: str) -> Record:
        row = conn.execute("SELECT * FROM environments WHERE id = ?", (env_id,)).fetchone()
        if row is None:
            raise NotFound(f"environment {env_id!r} not found")
        return row

    def _dep_row(self, conn: Tx, env_id: str, dep_id: str) -> Record:
        self._env_row(conn, env_id)
        row = conn.execute(
            "SELECT * FROM deployments WHERE environment_id = ? AND id = ?", (env_id, dep_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"deployment {dep_id!r} not found in environment {env_id!r}")
        return row

    def _action_row(self, conn: Tx, env_id: str, action_id: str) -> Record:
        row = conn.execute(
            "SELECT * FROM actions WHERE id = ? AND environment_id = ?", (action_id, env_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"action {action_id!r} not found in environment {env_id!r}")
        return row

    def _action(self, row: Record) -> dict[str, Any]:
        now = self.clock()
        state = row["state"]
        if state == "claimed" and row["lease_expires_at"] <= now:
            state = "lease_expired"
        return {
            "id": row["id"],
            "type": row["type"],
            "environment_id": row["environment_id"],
            "deployment_id": row["deployment_id"],
            "state": state,
            "attempt": row["attempt"],
            "lease_owner": row["lease_owner"],
            "lease_expires_at": iso(row["lease_expires_at"]),
            "created_at": iso(row["created_at"]),
            "completed_at": iso(row["completed_at"]),
            "completed_by": row["completed_by"],
            "result": from_json(row["result_json"]),
        }

    def _payload(self, row: Record) -> dict[str, Any]:
        """The action as an agent receives it on claim (the shape of `agent.model.Action`)."""
        body = json.loads(row["payload_json"])
        if not isinstance(body, dict):  # pragma: no cover - enqueue_raw only accepts objects
            body = {"payload": body}
        body.update(
            id=row["id"], environment_id=row["environment_id"],
            created_at=iso(row["created_at"]), attempt=row["attempt"],
        )
        return body

    def _enqueue(
        self,
        conn: Tx,
        env_id: str,
        action_type: str,
        dep_id: str | None,
        payload: dict[str, Any],
        raw: bool = False,
    ) -> dict[str, Any]:
        body = payload if raw else {"type": action_type, "deployment_id": dep_id, **payload}
        inserted = conn.execute(
            "INSERT INTO actions (id, environment_id, deployment_id, type, payload_json, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
            (uuid.uuid4().hex, env_id, dep_id, action_type, to_json(body), self.clock()),
        ).one()
        action_id = f"a-{inserted['seq']}"
        conn.execute("UPDATE actions SET id = ? WHERE seq = ?", (action_id, inserted["seq"]))
        note = " (raw, unvalidated)" if raw else ""
        self._event(conn, env_id, dep_id, action_id, f"{action_type} {action_id} enqueued{note}")
        return self._action(self._action_row(conn, env_id, action_id))

    def _event(
        self,
        conn: Tx,
        env_id: str,
        dep_id: str | None,
        action_id: str | None,
        message: str,
        level: str = "info",
        details: dict[str, Any] | None = None,
        source: str = "server",
        agent_id: str | None = None,
        event_id: str | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO events (environment_id, deployment_id, action_id, event_id, source, "
            "agent_id, level, message, details_json, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            (env_id, dep_id, action_id, event_id, source, agent_id, level, message,
             to_json(details or {}), self.clock()),
        )

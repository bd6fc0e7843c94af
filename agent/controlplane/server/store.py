"""The reference control plane's state: environments, deployments, heartbeats (+ the queue).

The store does not validate deployment specs (the API layer does, with
`agent.model`), so that `enqueue_raw` can store a malformed action for tests
of the agent's defences. Agent tokens are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import json
from typing import Any

from agent.controlplane.server.db import (
    Conflict,
    NotFound,
    StoreError,
    from_json,
    hash_token,
    iso,
    new_token,
    to_json,
)
from agent.controlplane.server.engine import Record, Tx
from agent.controlplane.server.leases import ActionQueue

__all__ = ["Conflict", "NotFound", "Store", "StoreError"]


class Store(ActionQueue):
    """The control plane's state in one database (a SQLite file or PostgreSQL)."""

    def create_environment(
        self, env_id: str, name: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Create an environment; returns it and its agent token (shown only this once)."""
        token = new_token()
        now = self.clock()
        with self._tx(write=True) as conn:
            if conn.execute("SELECT 1 FROM environments WHERE id = ?", (env_id,)).fetchone():
                raise Conflict("already_exists", f"environment {env_id!r} already exists")
            conn.execute(
                "INSERT INTO environments (id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
                (env_id, name or env_id, hash_token(token), now),
            )
            return self._environment(conn, self._env_row(conn, env_id)), token

    def rotate_token(self, env_id: str) -> str:
        """Replace an environment's agent token; the old one stops working at once."""
        token = new_token()
        with self._tx(write=True) as conn:
            cur = conn.execute(
                "UPDATE environments SET token_hash = ? WHERE id = ?", (hash_token(token), env_id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"environment {env_id!r} not found")
        return token

    def environment_for_token(self, token: str) -> str | None:
        """The environment an agent token belongs to, or None."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM environments WHERE token_hash = ?", (hash_token(token),)
            ).fetchone()
        return row["id"] if row else None

    def list_environments(self) -> list[dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute("SELECT * FROM environments ORDER BY id").fetchall()
            return [self._environment(conn, row) for row in rows]

    def get_environment(self, env_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            return self._environment(conn, self._env_row(conn, env_id))

    def _environment(self, conn: Tx, row: Record) -> dict[str, Any]:
        counts = conn.execute(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN desired = 'running' THEN 1 ELSE 0 END) "
            "AS running FROM deployments WHERE environment_id = ?", (row["id"],)
        ).one()
        unfinished = conn.execute(
            "SELECT COUNT(*) FROM actions WHERE environment_id = ? AND state != 'completed'",
            (row["id"],),
        ).one()[0]
        return {
            "id": row["id"],
            "name": row["name"],
            "created_at": iso(row["created_at"]),
            "deployments": counts["n"],
            "running_deployments": counts["running"] or 0,
            "unfinished_actions": unfinished,
            "last_heartbeat_at": iso(row["heartbeat_at"]),
            "last_heartbeat_agent_id": row["heartbeat_agent_id"],
            "last_heartbeat": from_json(row["heartbeat_json"]),
        }

    def get_deployment_spec(self, env_id: str, dep_id: str) -> tuple[dict[str, Any], str]:
        """The stored spec and desired state ('running' | 'stopped') of a deployment."""
        with self._tx() as conn:
            row = self._dep_row(conn, env_id, dep_id)
            return json.loads(row["spec_json"]), row["desired"]

    def create_deployment(self, env_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Store a new deployment (or re-create a stopped one) and enqueue its start."""
        dep_id = spec["id"]
        now = self.clock()
        with self._tx(write=True) as conn:
            self._env_row(conn, env_id)
            row = conn.execute(
                "SELECT desired FROM deployments WHERE environment_id = ? AND id = ?",
                (env_id, dep_id),
            ).fetchone()
            if row is not None and row["desired"] != "stopped":
                raise Conflict(
                    "already_exists",
                    f"deployment {dep_id!r} already exists in {env_id!r}; "
                    "use replace, relaunch or stop",
                )
            conn.execute(
                "INSERT INTO deployments (environment_id, id, spec_json, desired, created_at, "
                "updated_at) VALUES (?, ?, ?, 'running', ?, ?) ON CONFLICT (environment_id, id) "
                "DO UPDATE SET spec_json = excluded.spec_json, desired = 'running', "
                "updated_at = excluded.updated_at",
                (env_id, dep_id, to_json(spec), now, now),
            )
            return self._enqueue(
                conn, env_id, "deployment_start", dep_id, {"deployment": spec}
            )

    def enqueue_deployment_action(
        self,
        env_id: str,
        dep_id: str,
        action_type: str,
        spec: dict[str, Any] | None = None,
        desired: str | None = None,
        require_running: bool = False,
    ) -> dict[str, Any]:
        """Enqueue an action on an existing deployment, updating its spec/desired state."""
        now = self.clock()
        with self._tx(write=True) as conn:
            row = self._dep_row(conn, env_id, dep_id)
            if require_running and row["desired"] != "running":
                raise Conflict(
                    "stopped", f"deployment {dep_id!r} is stopped; relaunch or deploy it first"
                )
            if spec is not None:
                conn.execute(
                    "UPDATE deployments SET spec_json = ?, updated_at = ? "
                    "WHERE environment_id = ? AND id = ?", (to_json(spec), now, env_id, dep_id)
                )
            if desired is not None:
                conn.execute(
                    "UPDATE deployments SET desired = ?, updated_at = ? "
                    "WHERE environment_id = ? AND id = ?", (desired, now, env_id, dep_id)
                )
            payload: dict[str, Any] = {}
            if action_type in ("deployment_start", "deployment_replace_model",
                               "deployment_relaunch"):
                payload["deployment"] = spec if spec is not None else json.loads(row["spec_json"])
            return self._enqueue(conn, env_id, action_type, dep_id, payload)

    def enqueue_environment_status(self, env_id: str) -> dict[str, Any]:
        with self._tx(write=True) as conn:
            self._env_row(conn, env_id)
            return self._enqueue(conn, env_id, "environment_status", None, {})

    def enqueue_raw(self, env_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Store an action payload as given, unvalidated (for tests of the agent's defences)."""
        action_type = payload.get("type")
        dep_id = payload.get("deployment_id")
        with self._tx(write=True) as conn:
            self._env_row(conn, env_id)
            return self._enqueue(
                conn, env_id, str(action_type) if action_type is not None else "",
                str(dep_id) if dep_id is not None else None, payload, raw=True,
            )

    def list_deployments(self, env_id: str) -> list[dict[str, Any]]:
        with self._tx() as conn:
            env = self._env_row(conn, env_id)
            rows = conn.execute(
                "SELECT * FROM deployments WHERE environment_id = ? ORDER BY id", (env_id,)
            ).fetchall()
            return [self._deployment(conn, env, row) for row in rows]

    def get_deployment(self, env_id: str, dep_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            env = self._env_row(conn, env_id)
            return self._deployment(conn, env, self._dep_row(conn, env_id, dep_id))

    def expected_deployment_ids(self, env_id: str) -> list[str]:
        """Deployments that should run here, or still have unfinished actions."""
        with self._tx() as conn:
            self._env_row(conn, env_id)
            rows = conn.execute(
                "SELECT id FROM deployments WHERE environment_id = :env AND (desired = 'running' "
                "OR EXISTS (SELECT 1 FROM actions a WHERE a.environment_id = :env "
                "AND a.deployment_id = deployments.id AND a.state != 'completed')) ORDER BY id",
                {"env": env_id},
            ).fetchall()
        return [row["id"] for row in rows]

    def _deployment(
        self, conn: Tx, env: Record, row: Record
    ) -> dict[str, Any]:
        spec = json.loads(row["spec_json"])
        result = from_json(row["result_json"]) or {}
        data = result.get("data") or {}
        view: dict[str, Any] = {
            "id": row["id"],
            "environment_id": row["environment_id"],
            "desired": row["desired"],
            "spec": spec,
            "state": result.get("state", "unknown"),
            "status": result.get("status", "unknown"),
            "prediction_url": data.get("predictionUrl"),
            "current_model_id": data.get("currentModelId"),
            "message": data.get("message"),
            "source": "result" if result else None,
            "updated_at": iso(row["result_at"]),
            "last_result": result or None,
            "last_result_action_id": row["result_action_id"],
            "created_at": iso(row["created_at"]),
            "unfinished_actions": conn.execute(
                "SELECT COUNT(*) FROM actions WHERE environment_id = ? AND deployment_id = ? "
                "AND state != 'completed'", (row["environment_id"], row["id"])
            ).one()[0],
        }
        beat = from_json(env["heartbeat_json"]) or {}
        observed = next(
            (d for d in beat.get("deployments", []) if d.get("deployment_id") == row["id"]), None
        )
        if observed is not None and (row["result_at"] or 0) <= (env["heartbeat_at"] or 0):
            view.update(
                state=observed.get("state", "unknown"),
                status=observed.get("status", "unknown"),
                prediction_url=observed.get("prediction_url") or view["prediction_url"],
                current_model_id=observed.get("model_id") or view["current_model_id"],
                message=observed.get("message"),
                source="heartbeat",
                updated_at=iso(env["heartbeat_at"]),
            )
        return view

    def heartbeat(self, env_id: str, agent_id: str | None, status: dict[str, Any]) -> str:
        """Record the environment's latest status; returns the receive time."""
        now = self.clock()
        with self._tx(write=True) as conn:
            conn.execute(
                "UPDATE environments SET heartbeat_at = ?, heartbeat_agent_id = ?, "
                "heartbeat_json = ? WHERE id = ?", (now, agent_id, to_json(status), env_id),
            )
        return iso(now) or ""

"""Actions of an environment as a queue with leases: pending, claim, renew, release, complete.

A claim is one conditional `UPDATE` inside a serialised write transaction
(see `engine`): two agents, or two server replicas, can never both get the
lease. Actions of one deployment are delivered in order; an expired lease makes
the action deliverable again.
"""

from __future__ import annotations

import json
from typing import Any

from agent.controlplane.server.db import Conflict, Database, iso, to_json
from agent.controlplane.server.engine import Record, Tx

# An action is deliverable when it is pending (or its lease expired) and no
# earlier unfinished action exists for the same deployment.
_DELIVERABLE = """
    a.environment_id = :env
    AND (a.state = 'pending' OR (a.state = 'claimed' AND a.lease_expires_at <= :now))
    AND (a.deployment_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM actions b
        WHERE b.environment_id = a.environment_id AND b.deployment_id = a.deployment_id
          AND b.seq < a.seq AND b.state != 'completed'))
"""



class ActionQueue(Database):
    """Delivery of actions to agents, and the event history."""

    def pending(self, env_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """Deliverable actions, oldest first, as ActionRef-shaped dicts."""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT a.id, a.type, a.deployment_id FROM actions a WHERE {_DELIVERABLE} "
                "ORDER BY a.seq LIMIT :limit",
                {"env": env_id, "now": self.clock(), "limit": limit},
            ).fetchall()
        return [dict(row) for row in rows]

    def claim(
        self, env_id: str, action_id: str, agent_id: str, lease_seconds: float
    ) -> dict[str, Any]:
        """Take the lease atomically; returns the action payload with attempt incremented."""
        now = self.clock()
        with self._tx(write=True) as conn:
            cur = conn.execute(
                "UPDATE actions SET state = 'claimed', attempt = attempt + 1, lease_owner = :agent,"
                f" lease_expires_at = :expires WHERE id = :id AND seq IN (SELECT a.seq FROM "
                f"actions a WHERE a.id = :id AND {_DELIVERABLE})",
                {"env": env_id, "now": now, "id": action_id, "agent": agent_id,
                 "expires": now + lease_seconds},
            )
            row = self._action_row(conn, env_id, action_id)
            if cur.rowcount != 1:
                raise self._claim_refusal(conn, row, now)
            again = f", redelivered (attempt {row['attempt']})" if row["attempt"] > 1 else ""
            self._event(
                conn, env_id, row["deployment_id"], action_id,
                f"{row['type']} {action_id} claimed by {agent_id}{again}", agent_id=agent_id,
            )
            return self._payload(row)

    def _claim_refusal(self, conn: Tx, row: Record, now: float) -> Conflict:
        if row["state"] == "completed":
            return Conflict("already_completed", f"action {row['id']} is already completed")
        if row["state"] == "claimed" and row["lease_expires_at"] > now:
            return Conflict(
                "lease_conflict",
                f"action {row['id']} is leased by {row['lease_owner']} until "
                f"{iso(row['lease_expires_at'])}",
            )
        blocker = conn.execute(
            "SELECT id FROM actions WHERE environment_id = ? AND deployment_id = ? AND seq < ? "
            "AND state != 'completed' ORDER BY seq LIMIT 1",
            (row["environment_id"], row["deployment_id"], row["seq"]),
        ).fetchone()
        blocked_by = blocker["id"] if blocker else "an earlier action"
        return Conflict(
            "blocked",
            f"action {row['id']} waits for {blocked_by} on deployment {row['deployment_id']}",
        )

    def _held_row(
        self, conn: Tx, env_id: str, action_id: str, agent_id: str
    ) -> Record:
        """The action, if `agent_id` is its latest claimant and it is not completed."""
        row = self._action_row(conn, env_id, action_id)
        if row["state"] == "completed":
            raise Conflict("already_completed", f"action {action_id} is already completed")
        if row["state"] != "claimed" or row["lease_owner"] != agent_id:
            holder = row["lease_owner"] if row["state"] == "claimed" else "nobody"
            raise Conflict(
                "lease_lost", f"action {action_id} is not leased by {agent_id} (held by {holder})"
            )
        return row

    def renew(
        self, env_id: str, action_id: str, agent_id: str, lease_seconds: float
    ) -> dict[str, Any]:
        """Extend the lease; allowed to the latest claimant, even after expiry."""
        now = self.clock()
        with self._tx(write=True) as conn:
            self._held_row(conn, env_id, action_id, agent_id)
            conn.execute(
                "UPDATE actions SET lease_expires_at = ? WHERE id = ?",
                (now + lease_seconds, action_id),
            )
            return self._action(self._action_row(conn, env_id, action_id))

    def release(self, env_id: str, action_id: str, agent_id: str) -> dict[str, Any]:
        """Give the lease back: the action is deliverable again at once. Idempotent."""
        with self._tx(write=True) as conn:
            row = self._action_row(conn, env_id, action_id)
            if row["state"] == "pending":
                return self._action(row)
            row = self._held_row(conn, env_id, action_id, agent_id)
            conn.execute(
                "UPDATE actions SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = ?", (action_id,),
            )
            self._event(
                conn, env_id, row["deployment_id"], action_id,
                f"{row['type']} {action_id} released by {agent_id}", agent_id=agent_id,
            )
            return self._action(self._action_row(conn, env_id, action_id))

    def complete(
        self, env_id: str, action_id: str, agent_id: str, result: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Store the result. Returns (action, duplicate): a repeat by the agent that completed
        it is a harmless duplicate (the stored result stands); anyone else gets a Conflict."""
        now = self.clock()
        with self._tx(write=True) as conn:
            row = self._action_row(conn, env_id, action_id)
            if row["state"] == "completed":
                if row["completed_by"] == agent_id:
                    return self._action(row), True
                raise Conflict(
                    "lease_lost",
                    f"action {action_id} was already completed by {row['completed_by']}",
                )
            row = self._held_row(conn, env_id, action_id, agent_id)
            conn.execute(
                "UPDATE actions SET state = 'completed', completed_at = ?, completed_by = ?, "
                "result_json = ?, lease_expires_at = NULL WHERE id = ?",
                (now, agent_id, to_json(result), action_id),
            )
            dep_id = row["deployment_id"]
            if dep_id is not None:
                conn.execute(
                    "UPDATE deployments SET result_json = ?, result_at = ?, result_action_id = ? "
                    "WHERE environment_id = ? AND id = ?",
                    (to_json(result), now, action_id, env_id, dep_id),
                )
            data = result.get("data") or {}
            message = f": {data['message']}" if data.get("message") else ""
            self._event(
                conn, env_id, dep_id, action_id,
                f"{row['type']} {action_id} completed {result.get('status')}/"
                f"{result.get('state')}{message}",
                level="error" if result.get("status") == "failing" else "info",
                details={"result": result}, agent_id=agent_id,
            )
            return self._action(self._action_row(conn, env_id, action_id)), False

    def add_event(
        self,
        env_id: str,
        action_id: str,
        event: dict[str, Any],
        agent_id: str,
        event_id: str | None = None,
    ) -> None:
        """Append a progress event of the agent holding the lease (as for `complete`: the
        latest claimant, before completion); a repeated `event_id` is stored once."""
        with self._tx(write=True) as conn:
            row = self._held_row(conn, env_id, action_id, agent_id)
            self._event(
                conn, env_id, row["deployment_id"], action_id, event["message"],
                level=event.get("level", "info"), details=event.get("details") or {},
                source="agent", agent_id=agent_id, event_id=event_id,
            )

    def list_actions(
        self, env_id: str, deployment_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first."""
        with self._tx() as conn:
            self._env_row(conn, env_id)
            query = "SELECT * FROM actions WHERE environment_id = ?"
            params: list[Any] = [env_id]
            if deployment_id is not None:
                query += " AND deployment_id = ?"
                params.append(deployment_id)
            rows = conn.execute(query + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
            return [self._action(row) for row in rows]

    def get_action(self, env_id: str, action_id: str) -> dict[str, Any]:
        with self._tx() as conn:
            self._env_row(conn, env_id)
            return self._action(self._action_row(conn, env_id, action_id))

    def events(
        self,
        env_id: str,
        deployment_id: str | None = None,
        action_id: str | None = None,
        limit: int = 200,
        after: int | None = None,
    ) -> list[dict[str, Any]]:
        """Oldest first: the last `limit` events of the environment, deployment or action
        (only those with a sequence number above `after`, for followers)."""
        with self._tx() as conn:
            self._env_row(conn, env_id)
            query = "SELECT * FROM events WHERE environment_id = ?"
            params: list[Any] = [env_id]
            if deployment_id is not None:
                query += " AND deployment_id = ?"
                params.append(deployment_id)
            if action_id is not None:
                query += " AND action_id = ?"
                params.append(action_id)
            if after is not None:
                query += " AND seq > ?"
                params.append(after)
            rows = conn.execute(query + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [
            {
                "seq": row["seq"],
                "time": iso(row["created_at"]),
                "deployment_id": row["deployment_id"],
                "action_id": row["action_id"],
                "source": row["source"],
                "agent_id": row["agent_id"],
                "level": row["level"],
                "message": row["message"],
                "details": json.loads(row["details_json"]),
            }
            for row in reversed(rows)
        ]

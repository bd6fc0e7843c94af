"""What the MLflow adapter writes on a model version's tags: results and delivery attempts.

Results (`management-agent.state`, `.url`, `.message`, `.status`, `.updated`)
show in the MLflow UI; state is written last, so whoever waits for it (the UI,
a pipeline) sees the rest too.

The native control plane counts deliveries itself (a lease that expires is one
more attempt). MLflow has no leases, so the adapter counts: each claim of a
start or replace writes `management-agent.attempt` = `<action key>:<n>` on the
target version *before* the action runs. An action that kills the agent (OOM,
disk full) is then seen with a growing count after every restart, and the
runtime fails it past `runtime.max_delivery_attempts` instead of redelivering it
forever. A successful completion clears the tag, so a healthy deployment's
converge after a restart starts again at 1; a failure keeps it, so a failing
spec is retried at most that many times across restarts.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Protocol

from agent.model import ActionResult, Status

log = logging.getLogger(__name__)

TAG_PREFIX = "management-agent."
ATTEMPT_TAG = f"{TAG_PREFIX}attempt"


class VersionTags(Protocol):
    """The two registry calls used here (`MLflowRegistry`)."""

    def version(self, name: str, version: str) -> dict[str, Any]: ...

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...


def previous_attempts(tag_value: str | None, key: str) -> int:
    """How many times the action `key` was claimed before, from the tag's value."""
    if not tag_value:
        return 0
    seen_key, _, count = tag_value.rpartition(":")
    if seen_key != key or not count.isdigit():
        return 0  # another action (an older version or other overrides): its count is not ours
    return int(count)


def record_attempt(registry: VersionTags, name: str, version: str, key: str) -> int:
    """Count one more claim of action `key` on version `name`/`version`; the new count."""
    tags = {t["key"]: t["value"]
            for t in (registry.version(name, version).get("tags") or [])}
    attempt = previous_attempts(tags.get(ATTEMPT_TAG), key) + 1
    registry.set_version_tag(name, version, ATTEMPT_TAG, f"{key}:{attempt}")
    return attempt


def write_result(registry: VersionTags, name: str, version: str, result: ActionResult) -> None:
    """An action's result as tags on the version it deployed (state last)."""
    tags = {
        "url": result.data.prediction_url or "",
        "message": result.data.message or "",
        "status": result.status.value,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "state": result.state.value,
    }
    if result.status != Status.FAILING:
        tags = {"attempt": "", **tags}
    for key, value in tags.items():
        registry.set_version_tag(name, version, f"{TAG_PREFIX}{key}", value)
    if result.status == Status.FAILING:
        log.error("model %s version %s: %s", name, version, result.data.message)

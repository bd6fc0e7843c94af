"""Live progress for the `control-plane` CLI: an action's events as the agent reports them.

`--wait` used to print nothing until the action completed, although the agent
reports fetching, pushing and rollout events along the way. `follow_action`
prints each event as one line the moment it is stored, and `follow_events`
does the same for a whole deployment (`events --follow`). Lines are plain
text (no colour codes, so logs stay clean); on a terminal one extra status
line ("waiting: action leased by agent-1, 12s") is rewritten in place, never
when the output is a file or a pipe.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from agent.controlplane.server.client import FINISHED, AdminClient

POLL_SECONDS = 0.5


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover - the loop always returns


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def event_line(event: dict[str, Any]) -> str:
    """One event as one line: time, level, message, and what its details measure
    (percentage and bytes of a transfer, pods ready of a rollout) when the message
    does not say it already."""
    details = event.get("details") or {}
    message = str(event.get("message", ""))
    extras: list[str] = []
    done, total = _number(details.get("bytes_processed")), _number(details.get("bytes_total"))
    if done is not None and total:
        if "%" not in message:
            extras.append(f"{min(100, done * 100 // total)}%")
        extras.append(f"{_size(done)} of {_size(total)}")
    elif done is not None:
        extras.append(_size(done))
    ready, replicas = _number(details.get("ready_replicas")), _number(details.get("replicas"))
    if ready is not None and replicas is not None:
        extras.append(f"pods ready {ready}/{replicas}")
    stamp = str(event.get("time") or "")[11:19] or "--:--:--"
    suffix = f"  [{', '.join(extras)}]" if extras else ""
    return f"{stamp}  {str(event.get('level', 'info')).upper():<7}  {message}{suffix}"


def result_line(action: dict[str, Any]) -> str:
    """The outcome of a completed action, one line."""
    result = action.get("result") or {}
    data = result.get("data") or {}
    parts = [f"{action.get('type')} {action.get('deployment_id') or ''}".rstrip() + ":",
             f"{result.get('status', '?')}/{result.get('state', '?')}"]
    if data.get("predictionUrl"):
        parts.append(f"prediction URL {data['predictionUrl']}")
    if data.get("message"):
        parts.append(f"- {data['message']}")
    return " ".join(parts)


class Printer:
    """Event lines to `out`; on a terminal, one status line rewritten in place."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self._status = False

    def line(self, text: str) -> None:
        self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def status(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._status = True

    def _clear(self) -> None:
        if self._status:
            self.out.write("\r\033[K")
            self._status = False

    def done(self) -> None:
        self._clear()
        self.out.flush()


def _describe(action: dict[str, Any]) -> str:
    if action["state"] == "leased":
        return f"action {action['id']} claimed by {action.get('lease_owner')} " \
               f"(attempt {action.get('attempt')})"
    return f"action {action['id']} {action['state']}"


def follow_action(client: AdminClient, env_id: str, action: dict[str, Any], timeout: float,
                  printer: Printer, sleep: Callable[[float], None] = time.sleep,
                  ) -> dict[str, Any]:
    """Print the action's events until it completes or `timeout` passes; its last view.

    The action is read before its events each round, so once it reads completed
    every event it reported before completing has been printed."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    after: int | None = None
    shown_state = None
    while True:
        action = client.get_action(env_id, action["id"])
        for event in client.events(env_id, action_id=action["id"], after=after, limit=10000):
            printer.line(event_line(event))
            after = int(event["seq"])
        if action["state"] != shown_state and action["state"] != FINISHED:
            printer.line(_describe(action))
            shown_state = action["state"]
        if action["state"] == FINISHED or time.monotonic() >= deadline:
            printer.done()
            return action
        printer.status(f"waiting: {_describe(action)}, {time.monotonic() - started:.0f}s")
        sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def follow_events(client: AdminClient, env_id: str, dep_id: str | None, limit: int,
                  printer: Printer, sleep: Callable[[float], None] = time.sleep,
                  until: Callable[[], bool] = lambda: False) -> None:
    """Print the history, then every new event, and the result of each action that
    completes meanwhile; until interrupted (or `until()` is true)."""
    after: int | None = None
    for event in client.events(env_id, dep_id, limit=limit):
        printer.line(event_line(event))
        after = int(event["seq"])
    reported = {a["id"] for a in client.list_actions(env_id, dep_id) if a["state"] == FINISHED}
    what = f"deployment {dep_id}" if dep_id else f"environment {env_id}"
    printer.line(f"-- following new events of {what} (Ctrl-C to stop)")
    while not until():
        sleep(POLL_SECONDS)
        actions = client.list_actions(env_id, dep_id)
        for event in client.events(env_id, dep_id, limit=10000, after=after):
            printer.line(event_line(event))
            after = int(event["seq"])
        for action in reversed(actions):  # oldest first
            if action["state"] == FINISHED and action["id"] not in reported:
                printer.line(result_line(action))
                reported.add(action["id"])

"""Control-plane front ends: each turns what a control plane speaks into `Action`s.

The runtime talks to a `ControlPlane`; `http.NativeControlPlane` speaks the
native protocol v1 (docs/control-plane-protocol.md) and `mlflow` derives
actions from an MLflow Model Registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from agent.model import Action, ActionRef, ActionResult, EnvironmentStatus, Event

if TYPE_CHECKING:
    from agent.config import Settings


class ControlPlane(Protocol):
    """What the runtime needs from a control plane. Errors are `ControlPlaneError`s."""

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        """Actions deliverable to this environment now, oldest first; waits up to
        `wait_seconds` on the server side when there are none (long poll)."""
        ...

    def claim(self, action_id: str, lease_seconds: int) -> Action:
        """Take the lease on an action and return it parsed.

        Raises `LeaseConflictError` when another agent holds the lease, and
        `InvalidActionError` (lease held) when the payload is malformed, so
        that the runtime can complete it as failing with the parser's message.
        """
        ...

    def renew(self, action_id: str, lease_seconds: int) -> None:
        """Extend the lease during a long action."""
        ...

    def release(self, action_id: str) -> None:
        """Give the lease back unfinished, so the action is delivered again at once."""
        ...

    def event(self, action_id: str, event: Event) -> None:
        """Append a progress event to the action's history."""
        ...

    def complete(self, action_id: str, result: ActionResult) -> None:
        """Finish the action with its result; repeating it is harmless."""
        ...

    def heartbeat(self, status: EnvironmentStatus) -> None:
        """Report the environment's status; also proves the agent is alive."""
        ...

    def known_deployment_ids(self) -> set[str] | None:
        """Deployments the control plane expects here (for orphan detection); None if unknown."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def open_control_plane(settings: Settings) -> ControlPlane:
    """The configured control-plane front end."""
    if settings.control_plane.kind == "mlflow":
        from agent.controlplane.mlflow import MLflowControlPlane

        return MLflowControlPlane(settings)
    from agent.controlplane.http import NativeControlPlane

    return NativeControlPlane(settings)

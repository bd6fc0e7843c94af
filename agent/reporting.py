"""How the runtime reports results it did not get from a plugin run, and delivers every result.

Kept apart from the poll loop and the workers in `agent.runtime`: a malformed
entry, an action delivered too often or one past its time limit is completed
as failing here, and `complete` retries a result until its lease would have
expired anyway.
"""

from __future__ import annotations

import contextlib
import logging

from agent.config import Settings
from agent.controlplane import ControlPlane
from agent.errors import AgentError, InvalidActionError, LeaseConflictError
from agent.health import Metrics
from agent.logs import action_context
from agent.model import Action, ActionRef, ActionResult, InvalidActionRef, bounded
from agent.retry import retrying
from agent.worker import attempts_exhausted

log = logging.getLogger("agent.runtime")  # the runtime's log lines, wherever they are written


class ResultReporter:
    """Completes actions on the control plane for the runtime."""

    def __init__(self, settings: Settings, control_plane: ControlPlane, metrics: Metrics) -> None:
        self.settings = settings
        self.control_plane = control_plane
        self.metrics = metrics
        self._unreportable: set[str] = set()  # malformed entries already logged as such

    def complete(self, action_id: str, result: ActionResult) -> None:
        """Report the result, retrying until the lease would have expired anyway."""
        try:
            retrying(f"reporting the result of action {action_id}", None, logger=log,
                     deadline=self.settings.control_plane.lease_seconds)(
                self.control_plane.complete, action_id, result)
        except AgentError as exc:
            log.error("result not delivered (%s); the control plane will re-deliver the "
                      "action when its lease expires", exc)

    def complete_invalid(self, ref: ActionRef, exc: InvalidActionError) -> None:
        """Fail a claimed action whose payload does not validate."""
        with action_context(ref.id, ref.deployment_id):
            log.warning("malformed action completed as failing: %s", exc)
            self.metrics.actions.labels(ref.type, "invalid").inc()
            self.complete(ref.id, ActionResult.failing(bounded(f"invalid action: {exc}")))

    def reject_listed(self, ref: InvalidActionRef) -> None:
        """Report a malformed pending entry as failing: claim it (the lease is what lets us
        complete it), then complete it with the validation error. An entry the control plane
        cannot claim or complete is logged once and skipped; the poll goes on either way."""
        with action_context(ref.id or "-", ref.deployment_id):
            try:
                if not ref.id:
                    raise InvalidActionError("it has no usable id")
                # a malformed payload raises InvalidActionError, but the lease is ours all the same
                with contextlib.suppress(InvalidActionError):
                    self.control_plane.claim(ref.id, self.settings.control_plane.lease_seconds)
                self.metrics.actions.labels(ref.type, "invalid").inc()
                log.warning("malformed pending entry completed as failing: %s", ref.reason)
                self.complete(ref.id, ActionResult.failing(bounded(f"invalid action: "
                                                                   f"{ref.reason}")))
            except LeaseConflictError:
                log.debug("malformed pending entry %s is leased by another agent", ref.id)
            except AgentError as exc:
                if ref.id not in self._unreportable:
                    if len(self._unreportable) < 1000:
                        self._unreportable.add(ref.id)
                    log.error("malformed pending entry skipped (%s), not reportable to the "
                              "control plane: %s", ref.reason, exc)

    def complete_exhausted(self, action: Action) -> None:
        """Fail an action delivered more often than allowed, without running it again: the
        earlier deliveries never finished, most likely because running it killed the agent."""
        with action_context(action.id, action.deployment_id):
            limit = self.settings.runtime.max_delivery_attempts
            log.error("delivery attempt %d exceeds runtime.max_delivery_attempts=%d: "
                      "completing it as failing without running it", action.attempt, limit)
            self.metrics.actions.labels(action.type, "attempts_exhausted").inc()
            self.complete(action.id, attempts_exhausted(action, limit))

    def complete_timed_out(self, action: Action, limit: float) -> None:
        """Report a hung action as failed (the plugin call may still be running)."""
        with action_context(action.id, action.deployment_id):
            log.error("%s exceeded runtime.action_timeout_seconds (%.0fs); reporting it as "
                      "failed", action.type, limit)
            self.metrics.actions.labels(action.type, "timed_out").inc()
            self.complete(action.id, ActionResult.failing(
                f"{action.type} did not finish within {limit:.0f}s "
                "(runtime.action_timeout_seconds); the deployment may be partly changed: "
                "check its status, then retry"))

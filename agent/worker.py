"""Executes one claimed action through the plugin and turns every outcome into a result.

Nothing escapes `execute`: a malformed action, a plugin error or a bug all
become a failing `ActionResult` with a message a user can act on, so the
control plane always learns how the action ended.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from agent import __version__
from agent.controlplane import ControlPlane
from agent.errors import AgentError, InvalidActionError
from agent.logs import scrub
from agent.model import (
    Action,
    ActionResult,
    ActionType,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    Event,
    ResultData,
    Status,
)
from agent.plugins import Plugin

log = logging.getLogger(__name__)

#: event levels the protocol knows, with the log level each is logged at
EVENT_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                "error": logging.ERROR}


class EventReporter:
    """The `Reporter` handed to plugins: logs the event and appends it to the action's history.

    A control plane that cannot take an event must not fail the action, so
    delivery problems are logged and swallowed. Every event's details carry
    the deployment id (the one progress reporter: plugins add no wrapper).
    """

    def __init__(self, control_plane: ControlPlane, action_id: str,
                 deployment_id: str | None = None) -> None:
        self._control_plane = control_plane
        self._action_id = action_id
        self._deployment_id = deployment_id

    def __call__(self, message: str, level: str = "info", **details: Any) -> None:
        message = scrub(message)
        level = level.lower() if level.lower() in EVENT_LEVELS else "info"
        log.log(EVENT_LEVELS[level], "%s", message)
        if self._deployment_id:
            details = {"deployment_id": self._deployment_id, **details}
        try:
            details = json.loads(scrub(json.dumps(details, default=str)))
            self._control_plane.event(
                self._action_id, Event(message=message, level=level, details=details)
            )
        except Exception as exc:  # an event must never fail the action that reports it
            log.warning("event not delivered to the control plane: %s", exc)


def _require_spec(action: Action) -> DeploymentSpec:
    """The desired deployment; `Action` checked at parse time that it is there."""
    if action.deployment is None:  # only an Action built without validation gets here
        raise InvalidActionError(f"{action.type} needs a deployment spec", action.id)
    return action.deployment


def _require_deployment_id(action: Action) -> str:
    """The deployment the action is about; `Action` checked it at parse time."""
    if not action.deployment_id:  # only an Action built without validation gets here
        raise InvalidActionError(f"{action.type} needs a deployment_id", action.id)
    return action.deployment_id


def _status_result(status: DeploymentStatus) -> ActionResult:
    return ActionResult(
        status=status.status,
        state=status.state,
        data=ResultData(
            prediction_url=status.prediction_url,
            current_model_id=status.model_id,
            message=status.message,
        ),
    )


def run_plugin(
    action: Action, plugin: Plugin, control_plane: ControlPlane, report: EventReporter
) -> ActionResult:
    """Dispatch the action to the plugin method for its type."""
    match action.type:
        case ActionType.DEPLOYMENT_START:
            return plugin.start(_require_spec(action), report)
        case ActionType.DEPLOYMENT_REPLACE_MODEL:
            return plugin.replace_model(_require_spec(action), report)
        case ActionType.DEPLOYMENT_RELAUNCH:
            return plugin.relaunch(_require_spec(action), report)
        case ActionType.DEPLOYMENT_STOP:
            return plugin.stop(_require_deployment_id(action), report)
        case ActionType.DEPLOYMENT_STATUS:
            return _status_result(plugin.status(_require_deployment_id(action)))
        case ActionType.ENVIRONMENT_STATUS:
            environment = plugin.environment_status(control_plane.known_deployment_ids())
            return ActionResult(
                status=environment.status,
                state=DeploymentState.READY if environment.status == Status.PASSING
                else DeploymentState.UNKNOWN,
                data=ResultData(
                    message=environment.message,
                    details={**environment.model_dump(mode="json"), "agent_version": __version__},
                ),
            )
    raise InvalidActionError(f"unsupported action type {action.type!r}", action.id)


def execute(action: Action, plugin: Plugin, control_plane: ControlPlane) -> ActionResult:
    """Run the action; always returns a result, never raises."""
    report = EventReporter(control_plane, action.id, action.deployment_id)
    try:
        if action.attempt > 1:
            report(f"delivery attempt {action.attempt}: re-executing (actions are idempotent)")
        result = run_plugin(action, plugin, control_plane, report)
        if result.data.message:  # a plugin message may quote a URL or command with a secret
            result.data.message = scrub(result.data.message)
        return result
    except InvalidActionError as exc:
        log.warning("invalid action: %s", exc)
        return ActionResult.failing(f"invalid action: {scrub(str(exc))}")
    except AgentError as exc:
        log.error("action failed: %s", exc)
        return ActionResult.failing(scrub(str(exc)))
    except Exception as exc:  # a bug must not kill the worker or lose the action
        log.exception("unexpected error while executing the action")
        return ActionResult.failing(
            f"internal agent error ({type(exc).__name__}): {scrub(str(exc))}; see the agent log"
        )

"""An action is validated once, when parsed; its events carry its deployment (one reporter)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.model import Action


def _action(**fields: Any) -> Action:
    return Action.model_validate({"id": "a1", "environment_id": "e", **fields})


SPEC = {"id": "dep-a", "model": {"id": "m", "image": "i"}}


def test_the_deployment_id_comes_from_the_spec_when_the_action_names_none() -> None:
    assert _action(type="deployment_start", deployment=SPEC).deployment_id == "dep-a"


@pytest.mark.parametrize(("fields", "message"), [
    ({"type": "deployment_start", "deployment_id": "dep-a"}, "needs a deployment spec"),
    ({"type": "deployment_relaunch"}, "needs a deployment spec"),
    ({"type": "deployment_replace_model", "deployment_id": "dep-b", "deployment": SPEC},
     "deployment id mismatch"),
    ({"type": "deployment_stop"}, "needs a deployment_id"),
    ({"type": "deployment_status", "deployment_id": "../etc"}, "DNS-1123"),
    ({"type": "deployment_stop", "deployment_id": "Dep_A"}, "DNS-1123"),
])
def test_malformed_actions_are_refused_with_the_reason(fields: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _action(**fields)


def test_environment_status_needs_no_deployment() -> None:
    assert _action(type="environment_status").deployment_id is None


class _Recorder:
    """Records events as a control plane would store them (only `event` is called)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def event(self, action_id: str, event: Any) -> None:
        self.events.append((action_id, event))


def test_the_one_event_reporter_tags_events_with_the_deployment() -> None:
    from agent.worker import EventReporter

    recorder = _Recorder()
    report = EventReporter(recorder, "a1", "dep-a")  # type: ignore[arg-type]
    report("deploying model m1", image="reg/m1:1")
    (action_id, event), = recorder.events
    assert action_id == "a1" and event.message == "deploying model m1"
    assert event.details == {"deployment_id": "dep-a", "image": "reg/m1:1"}

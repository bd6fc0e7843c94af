"""`worker.execute`: every outcome of an action becomes a result a user can act on.

The plugin is the real `FilesystemPlugin` writing into `tmp_path`; plugins that
fail on purpose are subclasses of it. The control plane is a recorder of
events (`execute` only posts events and asks for the known deployment ids),
because what is under test is the mapping from outcome to result; the real
HTTP path is covered by tests/integration/core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.errors import ControlPlaneError, PluginError
from agent.logs import register_secret
from agent.model import (
    Action,
    ActionResult,
    DeploymentSpec,
    DeploymentState,
    Event,
    Status,
)
from agent.plugins.filesystem import FilesystemPlugin
from agent.worker import EventReporter, execute


class EventRecorder:
    """The two control-plane calls `execute` makes; `fail` makes event delivery fail."""

    def __init__(self, fail: bool = False) -> None:
        self.events: list[Event] = []
        self.fail = fail

    def event(self, action_id: str, event: Event) -> None:
        if self.fail:
            raise ControlPlaneError("control plane unreachable")
        self.events.append(event)

    def known_deployment_ids(self) -> set[str] | None:
        return {"dep-1"}

    @property
    def messages(self) -> list[str]:
        return [event.message for event in self.events]


@pytest.fixture
def plugin(tmp_path: Path) -> FilesystemPlugin:
    settings = Settings.model_validate({
        "control_plane": {"environment_id": "env-1"},
        "plugin": {"filesystem": {"output_dir": str(tmp_path / "out")}}})
    return FilesystemPlugin(settings)


def _action(action_type: str, deployment_id: str | None = "dep-1", **extra: Any) -> Action:
    payload: dict[str, Any] = {"id": "a-1", "type": action_type, "environment_id": "env-1",
                               "deployment_id": deployment_id, **extra}
    return Action.model_validate(payload)


def _spec(deployment_id: str = "dep-1") -> dict[str, Any]:
    return {"id": deployment_id, "model": {"id": "m1", "image": "registry.example/m:1"}}


def test_start_runs_the_plugin_and_streams_its_events(plugin: FilesystemPlugin,
                                                      tmp_path: Path) -> None:
    cp = EventRecorder()
    result = execute(_action("deployment_start", deployment=_spec()), plugin, cp)
    assert (result.status, result.state) == (Status.PASSING, DeploymentState.READY)
    assert result.data.prediction_url
    assert (tmp_path / "out" / "dep-1").is_dir()
    assert any("rendered" in message for message in cp.messages)


def test_status_and_stop_take_the_deployment_id(plugin: FilesystemPlugin) -> None:
    cp = EventRecorder()
    execute(_action("deployment_start", deployment=_spec()), plugin, cp)
    status = execute(_action("deployment_status"), plugin, cp)
    assert status.state == DeploymentState.READY and status.data.current_model_id == "m1"
    stopped = execute(_action("deployment_stop"), plugin, cp)
    assert stopped.state == DeploymentState.STOPPED
    assert execute(_action("deployment_status"), plugin, cp).state == DeploymentState.STOPPED


def test_environment_status_reports_the_agent_version(plugin: FilesystemPlugin) -> None:
    result = execute(_action("environment_status", deployment_id=None), plugin, EventRecorder())
    assert result.status == Status.PASSING
    assert result.data.details["agent_version"]


# An action is validated once, where it is parsed (`Action`): a malformed one never reaches
# `execute`; the claim turns the refusal into a failing result (tests/unit/core/test_runtime.py).

def test_a_start_without_a_spec_is_refused_where_the_action_is_parsed() -> None:
    with pytest.raises(ValidationError, match="deployment_start needs a deployment spec"):
        _action("deployment_start")


def test_a_spec_for_another_deployment_is_refused_where_the_action_is_parsed() -> None:
    with pytest.raises(ValidationError, match="deployment id mismatch: action targets 'dep-1', "
                                              "spec describes 'dep-2'"):
        _action("deployment_replace_model", deployment=_spec("dep-2"))


def test_a_deployment_id_that_is_not_a_dns_label_is_refused_where_the_action_is_parsed(
        plugin: FilesystemPlugin, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not a DNS-1123 label"):
        _action("deployment_stop", deployment_id="../etc")
    # an Action built without validation still cannot leave the plugin's folder
    action = _action("deployment_stop").model_copy(update={"deployment_id": "../etc"})
    assert execute(action, plugin, EventRecorder()).status == Status.FAILING
    assert not (tmp_path / "etc").exists()


class FailingPlugin(FilesystemPlugin):
    """Fails `start` with `error` (a plugin error or a bug)."""

    error: Exception = PluginError("failed")

    def start(self, spec: DeploymentSpec, report: Any) -> ActionResult:
        report("about to fail")
        raise self.error


def test_a_plugin_error_fails_the_action_with_its_message_scrubbed(tmp_path: Path) -> None:
    register_secret("hunter2-secret-value")
    plugin = FailingPlugin(Settings.model_validate(
        {"plugin": {"filesystem": {"output_dir": str(tmp_path)}}}))
    plugin.error = PluginError("push to https://user:hunter2-secret-value@reg/x refused")
    result = execute(_action("deployment_start", deployment=_spec()), plugin, EventRecorder())
    assert result.status == Status.FAILING
    assert "refused" in (result.data.message or "")
    assert "hunter2-secret-value" not in (result.data.message or "")


def test_a_bug_in_the_plugin_becomes_a_failing_result(tmp_path: Path) -> None:
    plugin = FailingPlugin(Settings.model_validate(
        {"plugin": {"filesystem": {"output_dir": str(tmp_path)}}}))
    plugin.error = KeyError("spec")
    result = execute(_action("deployment_start", deployment=_spec()), plugin, EventRecorder())
    assert result.status == Status.FAILING
    assert result.data.message == "internal agent error (KeyError): 'spec'; see the agent log"


def test_an_undeliverable_event_does_not_fail_the_action(plugin: FilesystemPlugin) -> None:
    result = execute(_action("deployment_start", deployment=_spec()), plugin,
                     EventRecorder(fail=True))
    assert result.status == Status.PASSING


def test_a_redelivered_action_says_so(plugin: FilesystemPlugin) -> None:
    cp = EventRecorder()
    execute(_action("deployment_start", deployment=_spec(), attempt=2), plugin, cp)
    assert cp.messages[0] == "delivery attempt 2: re-executing (actions are idempotent)"


def test_events_are_scrubbed_and_unknown_levels_become_info() -> None:
    register_secret("s3cr3t-token-value")
    cp = EventRecorder()
    report = EventReporter(cp, "a-1")  # type: ignore[arg-type]
    report("pulling with s3cr3t-token-value", level="LOUD", url="https://x?t=s3cr3t-token-value")
    event = cp.events[0]
    assert event.level == "info"
    assert "s3cr3t-token-value" not in event.message
    assert "s3cr3t-token-value" not in str(event.details)


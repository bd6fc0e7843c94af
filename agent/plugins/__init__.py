"""The plugin protocol and plugin discovery.

A plugin executes actions against one target (a Kubernetes namespace, a
directory, a git repository). Plugins are found through the entry-point group
`management_agent.plugins`; a third-party plugin that fails to import is
logged and skipped so that it can never take the agent down.

Every method must be idempotent: delivery is at-least-once, so executing the
same action twice (after a crash, after a lease expired) must be harmless.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agent.errors import ConfigError
from agent.model import ActionResult, DeploymentSpec, DeploymentStatus, EnvironmentStatus

if TYPE_CHECKING:
    from agent.config import Settings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "management_agent.plugins"


class Reporter(Protocol):
    """Progress channel of one action: events end up in the control plane's history."""

    def __call__(self, message: str, level: str = "info", **details: Any) -> None: ...


@runtime_checkable
class Plugin(Protocol):
    """What the runtime needs from a target."""

    name: str

    def start(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Create (or converge) the deployment; a repeated start changes nothing."""
        ...

    def stop(self, deployment_id: str, report: Reporter) -> ActionResult:
        """Remove the deployment; an already-gone deployment is a success."""
        ...

    def replace_model(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Swap the model, keeping the old one serving until the new one is available."""
        ...

    def relaunch(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Restart the deployment's servers with the same model."""
        ...

    def status(self, deployment_id: str) -> DeploymentStatus:
        """Observed state of one deployment, from the target, not from memory."""
        ...

    def list(self) -> list[DeploymentStatus]:
        """Observed state of every deployment this environment manages."""
        ...

    def environment_status(self, known_ids: set[str] | None = None) -> EnvironmentStatus:
        """Everything managed here; ids not in `known_ids` are reported as orphans."""
        ...

    def close(self) -> None:
        """Release clients and background threads."""
        ...


def available_plugins() -> dict[str, Any]:
    """Plugin classes by name; broken entry points are logged and skipped."""
    found: dict[str, Any] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[entry.name] = entry.load()
        except Exception as exc:  # a third-party plugin must not crash the agent
            log.error("plugin %r could not be loaded and is skipped: %s", entry.name, exc)
    return found


def load_plugin(settings: Settings) -> Plugin:
    """Instantiate the configured plugin, or fail with the list of plugins that exist."""
    wanted = settings.plugin.name
    plugins = available_plugins()
    if wanted not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise ConfigError(f"plugin.name: unknown plugin {wanted!r} (available: {known})")
    plugin = plugins[wanted](settings)
    if not isinstance(plugin, Plugin):
        raise ConfigError(f"plugin {wanted!r} does not implement the plugin protocol")
    return plugin

"""The agent's error hierarchy.

Every boundary (control plane, Kubernetes, registry, object store) maps its
library's exceptions to these, so callers never depend on a client library and
messages are safe to show: they never carry a secret.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of all errors the agent raises on purpose; the message is user-facing."""

    #: True when retrying the same operation later may succeed.
    transient: bool = False


class ConfigError(AgentError):
    """The configuration is invalid; the message lists every bad key."""


class InvalidActionError(AgentError):
    """An action or deployment spec is malformed; completing it as failing is the answer."""

    def __init__(self, message: str, action_id: str | None = None) -> None:
        super().__init__(message)
        self.action_id = action_id


class ControlPlaneError(AgentError):
    """The control plane could not be reached or answered something unusable."""

    transient = True


class LeaseConflictError(ControlPlaneError):
    """Another agent holds the lease on this action."""

    transient = False


class PluginError(AgentError):
    """A plugin failed to carry out an action."""


class ClusterError(PluginError):
    """The Kubernetes API refused or failed a request."""


class PermissionDeniedError(ClusterError):
    """The agent's service account lacks a permission; the message names the verb and resource."""


class RegistryError(AgentError):
    """An OCI registry refused or failed a request."""


class BuildError(AgentError):
    """Building or publishing the model image failed."""


class ArtifactError(AgentError):
    """A model artifact could not be fetched or unpacked."""


class UnsafeArchiveError(ArtifactError):
    """An archive tried to escape its destination or exceeded a size or count limit."""

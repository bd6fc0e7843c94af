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
    #: the HTTP status of the answer that caused it, when there was one
    status: int | None = None
    #: seconds the server asked us to wait before retrying (its Retry-After), if it did
    retry_after: float | None = None


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


class NotFoundError(AgentError):
    """The object (or its kind) does not exist (HTTP 404)."""


class ConflictError(AgentError):
    """The object already exists or was changed since it was read (HTTP 409): handled, not
    retried."""


class PermissionDeniedError(AgentError):
    """The agent's credentials lack a permission (HTTP 403); the message names what to grant."""


class LeaseConflictError(ControlPlaneError, ConflictError):
    """Another agent holds the lease on this action."""

    transient = False


class PluginError(AgentError):
    """A plugin failed to carry out an action."""


class ClusterError(PluginError):
    """The Kubernetes API refused or failed a request."""


class RegistryError(AgentError):
    """An OCI registry refused or failed a request."""


class BuildError(AgentError):
    """Building or publishing the model image failed."""


class ArtifactError(AgentError):
    """A model artifact could not be fetched or unpacked."""


class UnsafeArchiveError(ArtifactError):
    """An archive tried to escape its destination or exceeded a size or count limit."""


#: HTTP status -> the error class every boundary raises for it (kopf's style); other
#: statuses get the boundary's own class (`agent.retry.error_for_status`).
STATUS_ERRORS: dict[int, type[AgentError]] = {
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
}

"""Domain types shared by every part of the agent.

The control plane speaks in these types (after `controlplane` has parsed its
wire format), the runtime schedules them and the plugins execute them. They
are pydantic models so that a malformed action is rejected at the boundary
with a message that names the bad field.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A deployment id becomes part of Kubernetes object names and of URLs, so it
# is held to DNS-1123 label rules (lower case alphanumerics and '-'), with
# room for the prefixes and suffixes the plugins add.
DEPLOYMENT_ID_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ActionType(StrEnum):
    """The action vocabulary of control-plane protocol v1."""

    DEPLOYMENT_START = "deployment_start"
    DEPLOYMENT_STOP = "deployment_stop"
    DEPLOYMENT_REPLACE_MODEL = "deployment_replace_model"
    DEPLOYMENT_RELAUNCH = "deployment_relaunch"
    DEPLOYMENT_STATUS = "deployment_status"
    ENVIRONMENT_STATUS = "environment_status"


class Status(StrEnum):
    """Health verdict of an action or deployment."""

    PASSING = "passing"
    WARNING = "warning"
    FAILING = "failing"
    UNKNOWN = "unknown"


class DeploymentState(StrEnum):
    """Lifecycle state of a deployment as seen on the target."""

    READY = "ready"
    LAUNCHING = "launching"
    REPLACING_MODEL = "replacingModel"
    STOPPED = "stopped"
    ERRORED = "errored"
    UNKNOWN = "unknown"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelRef(_Strict):
    """A model to serve: where its artifact lives and what identifies it."""

    id: str = Field(min_length=1, max_length=128, description="Control-plane model id.")
    uri: str | None = Field(
        default=None,
        description="Artifact location: s3://, gs://, http(s)://, oci://, file://, pvc://, "
        "models:/ (MLflow). None when `image` names a ready image.",
    )
    image: str | None = Field(
        default=None, description="A ready-built image; no build happens when set."
    )
    digest: str | None = Field(
        default=None, description="Expected content digest (sha256:...), verified on fetch."
    )
    credentials_secret: str | None = Field(
        default=None, description="Name of a Kubernetes secret holding artifact credentials."
    )

    @field_validator("uri")
    @classmethod
    def _uri_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("model uri needs a scheme, e.g. s3://bucket/key or file:///path")
        return value


class Resources(_Strict):
    """CPU/memory requests and limits in Kubernetes quantity notation."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class Autoscaling(_Strict):
    """Horizontal pod autoscaling bounds; needs a CPU request to work."""

    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(default=80, ge=1, le=100)


class DeploymentSpec(_Strict):
    """Everything a plugin needs to run one model as a prediction server."""

    id: str = Field(description="Deployment id; DNS-1123 label, at most 63 characters.")
    model: ModelRef
    replicas: int = Field(default=1, ge=0, le=1000)
    resources: Resources | None = None
    env: dict[str, str] = Field(default_factory=dict)
    autoscaling: Autoscaling | None = None
    server_profile: str | None = Field(
        default=None, description="Server profile name; the environment's default when None."
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Free-form key/value settings passed to the plugin."
    )

    @field_validator("id")
    @classmethod
    def _id_is_dns_label(cls, value: str) -> str:
        if not DEPLOYMENT_ID_PATTERN.match(value):
            raise ValueError(
                f"deployment id {value!r} is not a DNS-1123 label: use at most 63 lower-case "
                "letters, digits and '-', starting and ending with a letter or digit"
            )
        return value


class ActionRef(BaseModel):
    """A pending action as listed by the control plane, before it is claimed and parsed."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: str
    deployment_id: str | None = None


class Action(_Strict):
    """One order from the control plane, as claimed by the agent.

    Validated once, here: start/replace/relaunch carry a spec whose id is the
    action's deployment id (filled in from the spec when absent), stop and
    status name a deployment id, and every deployment id is a DNS-1123 label
    (plugins build object names, paths and label selectors from it).
    """

    id: str
    type: ActionType
    environment_id: str
    deployment_id: str | None = None
    deployment: DeploymentSpec | None = Field(
        default=None, description="Desired deployment for start/replace/relaunch."
    )
    created_at: datetime | None = None
    attempt: int = Field(default=1, ge=1, description="Delivery attempt; >1 after a lease expired.")

    def needs_spec(self) -> bool:
        """Start, replace and relaunch carry the desired deployment."""
        return self.type in (
            ActionType.DEPLOYMENT_START,
            ActionType.DEPLOYMENT_REPLACE_MODEL,
            ActionType.DEPLOYMENT_RELAUNCH,
        )

    def needs_deployment_id(self) -> bool:
        """Every action but environment_status is about one deployment."""
        return self.type != ActionType.ENVIRONMENT_STATUS

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.deployment is not None:
            if self.deployment_id and self.deployment_id != self.deployment.id:
                raise ValueError(
                    f"deployment id mismatch: action targets {self.deployment_id!r}, "
                    f"spec describes {self.deployment.id!r}")
            self.deployment_id = self.deployment.id
        elif self.needs_spec():
            raise ValueError(f"{self.type} needs a deployment spec")
        if self.needs_deployment_id() and not self.deployment_id:
            raise ValueError(f"{self.type} needs a deployment_id")
        if self.deployment_id is not None and not DEPLOYMENT_ID_PATTERN.match(self.deployment_id):
            raise ValueError(
                f"deployment id {self.deployment_id!r} is not a DNS-1123 label: use at most 63 "
                "lower-case letters, digits and '-', starting and ending with a letter or digit")
        return self


class ResultData(_Strict):
    """What the control plane shows the user about a deployment after an action."""

    prediction_url: str | None = Field(default=None, alias="predictionUrl")
    image: str | None = None
    current_model_id: str | None = Field(default=None, alias="currentModelId")
    old_model_in_use: bool | None = Field(default=None, alias="oldModelInUse")
    message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ActionResult(_Strict):
    """The outcome an agent reports when it completes an action."""

    status: Status
    state: DeploymentState
    data: ResultData = Field(default_factory=ResultData)

    @classmethod
    def failing(cls, message: str, state: DeploymentState = DeploymentState.ERRORED,
                **data: Any) -> ActionResult:
        """A failing result with a human-readable message."""
        return cls(status=Status.FAILING, state=state, data=ResultData(message=message, **data))


class Event(_Strict):
    """A progress note on an action, shown in the control plane's history."""

    message: str
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    details: dict[str, Any] = Field(default_factory=dict)


class DeploymentStatus(_Strict):
    """The observed state of one deployment on the target."""

    deployment_id: str
    state: DeploymentState
    status: Status = Status.UNKNOWN
    model_id: str | None = None
    prediction_url: str | None = None
    message: str | None = None


class EnvironmentStatus(_Strict):
    """What a heartbeat and an environment_status action report."""

    agent_version: str
    plugin: str
    status: Status = Status.UNKNOWN
    deployments: list[DeploymentStatus] = Field(default_factory=list)
    orphans: list[str] = Field(
        default_factory=list, description="Managed deployments the control plane does not know."
    )
    message: str | None = None

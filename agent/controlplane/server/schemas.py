"""Wire types of protocol v1 that are not domain types (requests, envelopes, views).

The domain types themselves (`Action`, `ActionResult`, `Event`,
`EnvironmentStatus`, `DeploymentSpec`, `ModelRef`) come from `agent.model`, so
the server and the agent can never disagree on their shape.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent.controlplane.limits import (
    MAX_ID_CHARS,
    MAX_LISTED_DEPLOYMENTS,
    MAX_MESSAGE_CHARS,
    MAX_URL_CHARS,
    check_details,
)
from agent.model import (
    ActionRef,
    ActionResult,
    Autoscaling,
    DeploymentStatus,
    EnvironmentStatus,
    Event,
    ModelRef,
    Resources,
    ResultData,
)

ENVIRONMENT_ID_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
AGENT_ID = Field(min_length=1, max_length=MAX_ID_CHARS,
                 description="Identity of the agent process (the lease holder).")
Message = Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
ShortText = Annotated[str, Field(max_length=MAX_ID_CHARS)]
Url = Annotated[str, Field(max_length=MAX_URL_CHARS)]
Details = Annotated[dict[str, Any], AfterValidator(check_details),
                    Field(description="Free-form; at most 64 KiB as JSON.")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: str = Field(description="Machine-readable code, e.g. lease_conflict.")
    detail: str = Field(description="Human-readable explanation.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation errors (422 only)."
    )


# -- agent API ---------------------------------------------------------------------------------


class PendingActions(BaseModel):
    actions: list[ActionRef]


class ClaimRequest(_Body):
    agent_id: str = AGENT_ID
    lease_seconds: int | None = Field(
        default=None, ge=1, le=3600, description="Lease length; the server default when omitted."
    )


class RenewRequest(_Body):
    agent_id: str = AGENT_ID
    lease_seconds: int | None = Field(default=None, ge=1, le=3600)


class ReleaseRequest(_Body):
    agent_id: str = AGENT_ID


# The domain types of agent.model, with the field limits the server enforces (the agent
# builds them without limits and cuts them with agent.controlplane.limits before sending).


class EventIn(Event):
    message: Message
    details: Details = Field(default_factory=dict)


class ResultDataIn(ResultData):
    prediction_url: Url | None = Field(default=None, alias="predictionUrl")
    image: Url | None = None
    current_model_id: ShortText | None = Field(default=None, alias="currentModelId")
    message: Message | None = None
    details: Details = Field(default_factory=dict)


class ActionResultIn(ActionResult):
    data: ResultDataIn = Field(default_factory=ResultDataIn)


class DeploymentStatusIn(DeploymentStatus):
    deployment_id: ShortText
    model_id: ShortText | None = None
    prediction_url: Url | None = None
    message: Message | None = None


class EnvironmentStatusIn(EnvironmentStatus):
    agent_version: ShortText
    plugin: ShortText
    # narrower item type on purpose (the server's limits); only read, never appended to
    deployments: list[DeploymentStatusIn] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=MAX_LISTED_DEPLOYMENTS)
    orphans: list[ShortText] = Field(default_factory=list, max_length=MAX_LISTED_DEPLOYMENTS,
                                     description="Managed deployments the control plane does "
                                     "not know.")
    message: Message | None = None


class EventRequest(_Body):
    agent_id: str = AGENT_ID
    event_id: str | None = Field(
        default=None, max_length=128,
        description="Client-chosen id; a repeated id is stored once, so the call can be retried.",
    )
    event: EventIn


class CompleteRequest(_Body):
    agent_id: str = AGENT_ID
    result: ActionResultIn


class HeartbeatRequest(_Body):
    agent_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    status: EnvironmentStatusIn


class HeartbeatAck(BaseModel):
    received_at: str


class ExpectedDeployments(BaseModel):
    deployment_ids: list[str]


class Lease(BaseModel):
    action_id: str
    state: str
    lease_owner: str | None
    lease_expires_at: str | None


class ClaimedAction(BaseModel):
    """The shape of `agent.model.Action` (documentation only: raw test actions may deviate)."""

    id: str
    type: str
    environment_id: str
    deployment_id: str | None = None
    deployment: dict[str, Any] | None = Field(
        default=None, description="An agent.model.DeploymentSpec for start/replace/relaunch."
    )
    created_at: str | None = None
    attempt: int


# -- admin API ---------------------------------------------------------------------------------


class EnvironmentCreate(_Body):
    id: str = Field(pattern=ENVIRONMENT_ID_PATTERN, description="DNS-1123 label.")
    name: str | None = Field(default=None, max_length=200)


class EnvironmentView(BaseModel):
    id: str
    name: str
    created_at: str | None
    deployments: int
    running_deployments: int
    unfinished_actions: int
    last_heartbeat_at: str | None
    last_heartbeat_agent_id: str | None
    last_heartbeat: dict[str, Any] | None


class EnvironmentCreated(EnvironmentView):
    token: str = Field(description="The agent token; shown only once, stored as a hash.")


class TokenView(BaseModel):
    environment_id: str
    token: str


class ReplaceRequest(_Body):
    model: ModelRef
    replicas: int | None = Field(default=None, ge=0, le=1000)
    resources: Resources | None = None
    env: dict[str, str] | None = None
    autoscaling: Autoscaling | None = None
    server_profile: str | None = None
    config: dict[str, Any] | None = None


class ActionView(BaseModel):
    id: str
    type: str
    environment_id: str
    deployment_id: str | None
    state: str = Field(description="pending | claimed | lease_expired | completed")
    attempt: int
    lease_owner: str | None
    lease_expires_at: str | None
    created_at: str | None
    completed_at: str | None
    completed_by: str | None
    result: dict[str, Any] | None


class CompletedAction(BaseModel):
    action: ActionView
    duplicate: bool = Field(description="True when the action had already been completed.")


class DeploymentView(BaseModel):
    id: str
    environment_id: str
    desired: str = Field(description="running | stopped")
    spec: dict[str, Any]
    state: str
    status: str
    prediction_url: str | None
    current_model_id: str | None
    message: str | None
    source: str | None = Field(description="result | heartbeat: where state comes from.")
    updated_at: str | None
    last_result: dict[str, Any] | None
    last_result_action_id: str | None
    created_at: str | None
    unfinished_actions: int


class DeploymentAccepted(BaseModel):
    deployment: DeploymentView
    action: ActionView


class EventView(BaseModel):
    seq: int
    time: str | None
    deployment_id: str | None
    action_id: str | None
    source: str = Field(description="server | agent")
    agent_id: str | None
    level: str
    message: str
    details: dict[str, Any]

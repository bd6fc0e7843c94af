"""Per-deployment options of the Kubernetes plugin: `spec.config`, parsed once into a typed model.

`spec.config` is free-form on the wire (other plugins read other keys, so
unknown keys pass); the keys this plugin reads are declared here with their
types, and a wrong type is an `InvalidActionError` naming the key, never an
internal error deep in the rendering.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec


class DeploymentOptions(BaseModel):
    """What a deployment may set in `spec.config` for the Kubernetes plugin."""

    model_config = ConfigDict(extra="allow", frozen=True)

    rollout_timeout_seconds: Annotated[
        float, Field(gt=0, le=86400, allow_inf_nan=False, strict=True)] | None = Field(
        default=None, description="Seconds to wait for the rollout (plugin default otherwise).")
    run_as_non_root: bool | None = Field(
        default=None, description="Override of the profile's / environment's runAsNonRoot.")
    service_account_name: str | None = None
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Merged over plugin.kubernetes.node_selector.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Added to plugin.kubernetes.tolerations.")
    server_profile: str | None = Field(
        default=None, description="Profile name (spec.server_profile wins).")
    profile: dict[str, Any] = Field(
        default_factory=dict, description="Profile fields to override (checked with the profile).")
    # single profile fields (profiles._OVERRIDE_KEYS): their types are the profile's, checked
    # there with the profile as a whole
    base_image: Any = None
    model_path: Any = None
    port: Any = None
    health_path: Any = None
    predict_path: Any = None
    metrics_port: Any = None
    metrics_path: Any = None
    command: Any = None
    args: Any = None


def deployment_options(spec: DeploymentSpec) -> DeploymentOptions:
    """`spec.config` as typed options; a wrong type names the key."""
    try:
        return DeploymentOptions.model_validate(spec.config)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise InvalidActionError(f"deployment {spec.id}: {problems}") from None

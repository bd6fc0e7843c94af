"""Per-deployment options of the Kubernetes plugin: `spec.config`, parsed once into a typed model.

`spec.config` is free-form on the wire (other plugins read other keys, so
unknown keys pass); the keys this plugin reads are declared here with their
types, and a wrong type is an `InvalidActionError` naming the key, never an
internal error deep in the rendering.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec

# Kubernetes label grammar: key = [DNS-1123 subdomain prefix '/'] name; value may be empty
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
_SA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Toleration(BaseModel):
    """One toleration as the API server accepts it (core/v1 Toleration and its validation)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, alias="tolerationSeconds", strict=True)

    def checked(self) -> dict[str, Any]:
        """The API form; the cross-field rules the API server applies raise ValueError."""
        if self.key and not _LABEL_KEY.match(self.key):
            raise ValueError(f"key {self.key!r} is not a valid label key")
        if not self.key and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        if self.operator == "Exists" and self.value:
            raise ValueError("operator Exists takes no value")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds needs effect NoExecute")
        return self.model_dump(by_alias=True, exclude_none=True)


class DeploymentOptions(BaseModel):
    """What a deployment may set in `spec.config` for the Kubernetes plugin."""

    model_config = ConfigDict(extra="allow", frozen=True)

    rollout_timeout_seconds: Annotated[
        float, Field(gt=0, le=86400, allow_inf_nan=False, strict=True)] | None = Field(
        default=None, description="Seconds to wait for the rollout (plugin default otherwise).")
    run_as_non_root: bool | None = Field(
        default=None, description="Override of the profile's / environment's runAsNonRoot.")
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount of the pods (deployment_policy decides).")
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

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        checked = []
        for index, item in enumerate(value):
            try:
                checked.append(Toleration.model_validate(item).checked())
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"[{index}] {where}: {first['msg']}") from None
            except ValueError as exc:
                raise ValueError(f"[{index}] {exc}") from None
        return checked

    @field_validator("node_selector")
    @classmethod
    def _node_selector(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label key")
            if not _LABEL_VALUE.match(label):
                raise ValueError(f"{label!r} ({key}) is not a valid label value")
        return value

    @field_validator("service_account_name")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _SA_NAME.match(value)):
            raise ValueError(f"{value!r} is not a valid ServiceAccount name")
        return value


def deployment_options(spec: DeploymentSpec) -> DeploymentOptions:
    """`spec.config` as typed options; a wrong type names the key."""
    try:
        return DeploymentOptions.model_validate(spec.config)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(str(p) for p in err['loc'])}: "
            f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors())
        raise InvalidActionError(f"deployment {spec.id}: {problems}") from None

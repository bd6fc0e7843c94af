"""Settings of the Kubernetes plugin (`plugin.kubernetes` section).

Owned by the Kubernetes plugin; `agent.config` composes it into `Settings`.
The filesystem plugin renders with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerProfile(_Section):
    """A prediction server: base image, where the model goes, port, health and predict paths."""

    image: str
    model_path: str = "/mnt/models"
    port: int = Field(default=8080, ge=1, le=65535)
    health_path: str = "/health"
    predict_path: str = "/predict"
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)


class KubernetesSettings(_Section):
    """Where and how prediction servers run."""

    namespace: str = "default"
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool | None = Field(default=None, description="None: detect.")
    qps: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    server_profiles: dict[str, ServerProfile] = Field(default_factory=dict)
    default_server_profile: str | None = None
    outfacing_url_root: str = "http://localhost/"
    ingress_mode: Literal["nginx", "prefix", "openshift-route", "gateway", "none"] = "nginx"
    ingress_class_name: str | None = "nginx"
    ingress_annotations: dict[str, str] = Field(default_factory=dict)
    tls_secret_name: str | None = None
    rollout_timeout_seconds: float = Field(default=840.0, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)

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
    """A prediction server: base image, where the model goes, port, health and predict paths.

    `{name}` in paths, command, args and env values is replaced by the served model's
    name (the deployment id), `{model_path}` by `model_path` and `{port}` by `port`.
    """

    image: str | None = Field(
        default=None, description="Base server image; None: the deployment must name an image."
    )
    model_path: str = "/mnt/models"
    port: int = Field(default=8080, ge=1, le=65535)
    health_path: str = "/health"
    predict_path: str = "/predict"
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="None: port.")
    metrics_path: str = "/metrics"
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    run_as_non_root: bool | None = Field(
        default=None, description="Override of security.run_as_non_root for this server."
    )
    run_as_user: int | None = Field(
        default=None, ge=0, description="User id for images whose own user is root "
        "(security.run_as_user wins)."
    )


class RollingUpdate(_Section):
    """Deployment rolling-update bounds (the anchor's 30% / 10%)."""

    max_surge: int | str = "30%"
    max_unavailable: int | str = "10%"


class ProbeSettings(_Section):
    """Readiness/liveness/startup probe timing on the profile's health path."""

    enabled: bool = True
    period_seconds: int = Field(default=10, ge=1)
    timeout_seconds: int = Field(default=5, ge=1)
    readiness_failure_threshold: int = Field(default=3, ge=1)
    liveness_failure_threshold: int = Field(default=6, ge=1)
    startup_failure_threshold: int = Field(
        default=60, ge=1, description="period x threshold = time allowed to load the model."
    )


class SecuritySettings(_Section):
    """Pod and container security context of prediction servers."""

    run_as_non_root: bool = Field(
        default=True, description="Base images that run as root need false."
    )
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    read_only_root_filesystem: bool = False
    seccomp_runtime_default: bool = True


class AutoscalingSettings(_Section):
    """HorizontalPodAutoscaler (autoscaling/v2) defaults."""

    enabled: bool = Field(default=True, description="Render an HPA when a deployment asks.")


class PDBSettings(_Section):
    """PodDisruptionBudget (policy/v1), rendered when replicas > 1."""

    enabled: bool = True
    max_unavailable: int | str = 1


class NetworkPolicySettings(_Section):
    """Prediction pods accept traffic only from the ingress controller and the agent."""

    enabled: bool = False
    ingress_controller_namespace: str = "ingress-nginx"
    agent_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "management-agent"}
    )
    allow_from_namespaces: list[str] = Field(
        default_factory=list, description="Extra namespaces allowed in (e.g. monitoring)."
    )
    restrict_egress: bool = Field(default=True, description="Allow only DNS (+ extra) egress.")
    extra_egress: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra NetworkPolicy egress rules, as YAML."
    )


class MonitoringSettings(_Section):
    """Monitoring sidecar sharing an emptyDir spool with the prediction server."""

    enabled: bool = False
    image: str | None = None
    spool_dir: str = "/var/spool/mlops"
    env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)


class KubernetesSettings(_Section):
    """Where and how prediction servers run."""

    namespace: str = "default"
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool | None = Field(default=None, description="None: detect.")
    qps: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    api_retries: int = Field(default=5, ge=0, le=20, description="Retries of transient errors.")
    api_timeout_seconds: float = Field(default=30.0, gt=0)

    server_profiles: dict[str, ServerProfile] = Field(default_factory=dict)
    default_server_profile: str | None = Field(default=None, description="None: mlserver.")
    model_delivery: Literal["auto", "image", "storage-initializer"] = Field(
        default="auto",
        description="image: build a model image; storage-initializer: base image + init "
        "container that fetches the model; auto: storage-initializer when images.builder=none.",
    )
    agent_image: str | None = Field(
        default=None, description="The agent's own image, run as the storage initializer."
    )
    credentials_dir: str = "/var/run/secrets/model-credentials"

    name_prefix: str = "mlops-"
    outfacing_url_root: str = "http://localhost/"
    ingress_mode: Literal["nginx", "prefix", "openshift-route", "gateway", "none"] = "nginx"
    ingress_class_name: str | None = "nginx"
    ingress_annotations: dict[str, str] = Field(default_factory=dict)
    tls_secret_name: str | None = None
    gateway_parent_refs: list[dict[str, Any]] = Field(
        default_factory=list, description="HTTPRoute parentRefs (gateway mode)."
    )
    service_port: int = Field(default=80, ge=1, le=65535)
    cluster_domain: str = "cluster.local"

    rolling_update: RollingUpdate = Field(default_factory=RollingUpdate)
    progress_deadline_seconds: int = Field(default=840, ge=1)
    revision_history_limit: int = Field(default=3, ge=0)
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    default_resources: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="requests/limits used when a deployment sets none."
    )
    service_account_name: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    extra_labels: dict[str, str] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    prometheus_scrape: bool = True
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    pdb: PDBSettings = Field(default_factory=PDBSettings)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    rollout_timeout_seconds: float = Field(default=840.0, gt=0)
    fail_fast_seconds: float = Field(
        default=90.0, ge=0,
        description="Give up a rollout early when new pods sit in ImagePullBackOff or "
        "CrashLoopBackOff for this long.",
    )
    poll_interval_seconds: float = Field(default=2.0, gt=0)
    keep_failed: bool = Field(
        default=False, description="Keep the objects of a failed start for debugging."
    )
    probe_public_url: bool = Field(
        default=False, description="Check the health path through the public URL before ready."
    )
    public_probe_timeout_seconds: float = Field(
        default=60.0, ge=0, description="How long an action retries the public health check."
    )
    public_probe_ca_bundle: Path | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

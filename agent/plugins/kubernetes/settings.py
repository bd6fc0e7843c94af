"""Settings of the Kubernetes plugin (`plugin.kubernetes` section).

Owned by the Kubernetes plugin; `agent.config` composes it into `Settings`.
The filesystem plugin renders with the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.plugins.kubernetes.server_profile import ServerProfile

__all__ = ["KubernetesSettings", "ServerProfile"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RollingUpdate(_Section):
    """Deployment rolling-update bounds (the anchor's 30% / 10%)."""

    max_surge: int | str = Field(
        default="30%",
        description="Extra pods during a rollout (number or percentage).",
    )
    max_unavailable: int | str = Field(
        default="10%",
        description="Pods that may be unavailable during a rollout (number or percentage).",
    )


class ProbeSettings(_Section):
    """Readiness/liveness/startup probe timing on the profile's health path."""

    enabled: bool = Field(
        default=True,
        description="Readiness, liveness and startup probes on the profile's health path.",
    )
    period_seconds: int = Field(default=10, ge=1, description="Probe period, seconds.")
    timeout_seconds: int = Field(default=5, ge=1, description="Probe timeout, seconds.")
    readiness_failure_threshold: int = Field(
        default=3, ge=1,
        description="Failed readiness probes before the pod leaves the Service.",
    )
    liveness_failure_threshold: int = Field(
        default=6, ge=1,
        description="Failed liveness probes before the container restarts.",
    )
    startup_failure_threshold: int = Field(
        default=60, ge=1, description="period x threshold = time allowed to load the model."
    )


class SecuritySettings(_Section):
    """Pod and container security context of prediction servers."""

    run_as_non_root: bool = Field(
        default=True, description="Base images that run as root need false."
    )
    run_as_user: int | None = Field(
        default=None,
        description="Fixed UID of prediction servers; None: the image's.",
    )
    run_as_group: int | None = Field(
        default=None,
        description="Fixed GID of prediction servers; None: the image's.",
    )
    fs_group: int | None = Field(
        default=None,
        description="fsGroup of prediction pods; None: none.",
    )
    read_only_root_filesystem: bool = Field(
        default=False,
        description="Read-only root filesystem (many servers write to /tmp).",
    )
    seccomp_runtime_default: bool = Field(
        default=True,
        description="seccompProfile RuntimeDefault.",
    )


class AutoscalingSettings(_Section):
    """HorizontalPodAutoscaler (autoscaling/v2) defaults."""

    enabled: bool = Field(default=True, description="Render an HPA when a deployment asks.")


class PDBSettings(_Section):
    """PodDisruptionBudget (policy/v1), rendered when replicas > 1."""

    enabled: bool = Field(
        default=True,
        description="Render a PodDisruptionBudget when a deployment runs more than one replica.",
    )
    max_unavailable: int | str = Field(
        default=1,
        description="maxUnavailable of the budget (number or percentage).",
    )


class EgressTarget(_Section):
    """Model stores the storage initializer may reach when egress is restricted."""

    hosts: list[str] = Field(
        min_length=1, description="Host names or addresses (fnmatch patterns, e.g. "
        "*.amazonaws.com) this rule covers.")
    to: list[dict[str, Any]] = Field(
        default_factory=list, description="NetworkPolicyPeer list (ipBlock, namespaceSelector, "
        "podSelector); empty: the host's address when it is one, else any address.")
    ports: list[dict[str, Any]] = Field(
        default_factory=list, description="NetworkPolicyPort list; empty: the port of the URL.")


class TolerationRule(_Section):
    """Tolerations a deployment may ask for in `spec.config.tolerations`."""

    key: str = Field(description="Taint key (fnmatch pattern; '*' also allows a toleration "
                     "without a key, which tolerates every taint).")
    effects: list[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = Field(
        default_factory=list, description="Effects allowed; empty: any.")


class DeploymentPolicySettings(_Section):
    """What a deployment's `spec.config` may change about its pods (ops decide, orders ask)."""

    allowed_service_accounts: list[str] = Field(
        default_factory=lambda: ["default"],
        description="ServiceAccounts (fnmatch patterns) config.service_account_name may name; "
        "service_account_name is always allowed, agent_service_accounts never.")
    agent_service_accounts: list[str] = Field(
        default_factory=list,
        description="The agent's own ServiceAccounts ('namespace/name' or 'name'), which no "
        "prediction server may run as (the chart sets the agent's and the builder's).")
    allow_security_relaxation: bool = Field(
        default=False, description="Deployments may set run_as_non_root false or "
        "run_as_user 0 (config or config.profile).")
    allowed_tolerations: list[TolerationRule] = Field(
        default_factory=list, description="Tolerations deployments may add; empty: none.")
    allowed_node_selector_keys: list[str] = Field(
        default_factory=lambda: ["*"], description="Node label keys (fnmatch patterns) "
        "config.node_selector may use; empty: none.")


class NetworkPolicySettings(_Section):
    """Prediction pods accept traffic only from the ingress controller and the agent."""

    enabled: bool = Field(default=False, description="A NetworkPolicy per prediction server.")
    ingress_controller_namespace: str = Field(
        default="ingress-nginx",
        description="Namespace of the ingress controller, allowed in.",
    )
    agent_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "management-agent"},
        description="Labels of the agent's pods, allowed in.",
    )
    allow_from_namespaces: list[str] = Field(
        default_factory=list, description="Extra namespaces allowed in (e.g. monitoring)."
    )
    restrict_egress: bool = Field(
        default=True, description="Allow only DNS, the model stores (storage initializer) "
        "and extra_egress out.")
    extra_egress: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra NetworkPolicy egress rules, as YAML."
    )
    egress_to: list[EgressTarget] = Field(
        default_factory=list, description="Model stores the storage initializer may reach "
        "(restrict_egress): hosts -> peers and ports.")


class MonitoringSettings(_Section):
    """Monitoring sidecar sharing an emptyDir spool with the prediction server."""

    enabled: bool = Field(default=False, description="Add the monitoring sidecar.")
    image: str | None = Field(default=None, description="Image of the monitoring sidecar.")
    spool_dir: str = Field(
        default="/var/spool/mlops",
        description="Spool directory shared by server and sidecar.",
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the sidecar.")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="requests/limits of the sidecar.",
    )


class KubernetesSettings(_Section):
    """Where and how prediction servers run."""

    namespace: str = Field(default="default", description="Namespace where prediction servers run.")
    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file; None: in-cluster or the default kubeconfig.",
    )
    context: str | None = Field(
        default=None,
        description="kubeconfig context; None: the current one.",
    )
    in_cluster: bool | None = Field(default=None, description="None: detect.")
    qps: float = Field(
        default=20.0, gt=0,
        description="Requests per second to the Kubernetes API (client-side limit).",
    )
    burst: int = Field(default=40, ge=1, description="Requests allowed above qps in a burst.")
    api_retries: int = Field(
        default=5, ge=0, le=20,
        description="Retries of transient Kubernetes API errors.",
    )
    api_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="Timeout of one Kubernetes API request, seconds.",
    )
    list_page_size: int = Field(
        default=500, ge=1, le=10000,
        description="Objects per page of a LIST call (limit/continue), as kubectl's default.",
    )

    server_profiles: dict[str, ServerProfile] = Field(
        default_factory=dict,
        description="Server profiles added to (or replacing) the built-ins, by name.",
    )
    default_server_profile: str | None = Field(default=None, description="None: mlserver.")
    model_delivery: Literal["auto", "image", "storage-initializer", "image-volume"] = Field(
        default="auto",
        description="image: build a model image; storage-initializer: base image + init "
        "container that fetches the model; image-volume: base image + the model pushed as an "
        "OCI artifact and mounted as an image volume; auto: image-volume on clusters of at "
        "least image_volume_min_version with images.builder=direct, else image, and "
        "storage-initializer when images.builder=none. auto reads only the API server's "
        "version, not the nodes' runtimes: set image where nodes run containerd < 2.1 or "
        "CRI-O < 1.31.",
    )
    image_volume_min_version: str = Field(
        default="1.35", pattern=r"^v?[0-9]+\.[0-9]+$",
        description="auto picks image-volume on clusters of this Kubernetes version or newer "
        "(1.35: ImageVolume beta and on by default; raise it where the nodes' runtime cannot "
        "mount image volumes yet, e.g. containerd before 2.1).",
    )
    agent_image: str | None = Field(
        default=None, description="The agent's own image, run as the storage initializer."
    )
    credentials_dir: str = Field(
        default="/var/run/secrets/model-credentials",
        description="Where model credentials are mounted in storage-initializer containers.",
    )

    name_prefix: str = Field(
        default="mlops-",
        description="Prefix of the objects created per deployment (<prefix><deployment id>).",
    )
    outfacing_url_root: str = Field(
        default="http://localhost/",
        description="Public URL root; a deployment is served at <root><deployment id>/.",
    )
    ingress_mode: Literal["nginx", "prefix", "openshift-route", "gateway", "none"] = Field(
        default="nginx",
        description="How prediction servers are exposed.",
    )
    ingress_class_name: str | None = Field(
        default="nginx",
        description="IngressClass of prediction Ingresses; None: the cluster's default.",
    )
    ingress_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations added to every prediction Ingress/Route.",
    )
    tls_secret_name: str | None = Field(
        default=None,
        description="Secret with the TLS certificate of the Ingress host; None: no tls block.",
    )
    gateway_parent_refs: list[dict[str, Any]] = Field(
        default_factory=list, description="HTTPRoute parentRefs (gateway mode)."
    )
    service_port: int = Field(
        default=80, ge=1, le=65535,
        description="Port of the per-deployment Service.",
    )
    cluster_domain: str = Field(
        default="cluster.local",
        description="Cluster DNS domain (for in-cluster URLs).",
    )

    rolling_update: RollingUpdate = Field(default_factory=RollingUpdate)
    drain_seconds: int = Field(
        default=5, ge=0, le=25,
        description="Seconds a stopping prediction-server pod goes on serving before it gets "
                    "SIGTERM (a preStop sleep; Kubernetes >= 1.30), so that the ingress drops "
                    "it first and no request in flight fails during a replace (0: none).",
    )
    progress_deadline_seconds: int = Field(
        default=840, ge=1,
        description="Deployment progressDeadlineSeconds, seconds.",
    )
    revision_history_limit: int = Field(
        default=3, ge=0,
        description="Old ReplicaSets kept per prediction server.",
    )
    probes: ProbeSettings = Field(default_factory=ProbeSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    default_resources: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="requests/limits used when a deployment sets none."
    )
    service_account_name: str | None = Field(
        default=None,
        description="Service account of prediction servers; None: the namespace default.",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list,
        description="Names of image pull secrets of prediction servers.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node selector of prediction servers.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations of prediction servers.",
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="Affinity of prediction servers.",
    )
    extra_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to every object of a prediction server.",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of prediction server pods.",
    )
    prometheus_scrape: bool = Field(
        default=True,
        description="Add prometheus.io/scrape annotations to prediction server pods.",
    )
    autoscaling: AutoscalingSettings = Field(default_factory=AutoscalingSettings)
    pdb: PDBSettings = Field(default_factory=PDBSettings)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    deployment_policy: DeploymentPolicySettings = Field(default_factory=DeploymentPolicySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)

    rollout_timeout_seconds: float = Field(
        default=840.0, gt=0,
        description="Seconds a rollout may take before the action fails.",
    )
    fail_fast_seconds: float = Field(
        default=90.0, ge=0,
        description="Give up a rollout early when new pods sit in ImagePullBackOff or "
                    "CrashLoopBackOff for this long, seconds (0: never).",
    )
    poll_interval_seconds: float = Field(
        default=2.0, gt=0,
        description="Seconds between two looks at a rollout.",
    )
    keep_failed: bool = Field(
        default=False, description="Keep the objects of a failed start for debugging."
    )
    probe_public_url: bool = Field(
        default=False, description="Check the health path through the public URL before ready."
    )
    public_probe_timeout_seconds: float = Field(
        default=60.0, ge=0,
        description="How long an action retries the public health check, seconds.",
    )
    public_probe_ca_bundle: Path | None = Field(
        default=None,
        description="CA (PEM file) of the public URL's certificate, for probe_public_url.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form settings for newer prediction-server features.",
    )

    @model_validator(mode="after")
    def _gateway_needs_parent_refs(self) -> KubernetesSettings:
        """An HTTPRoute without parentRefs attaches to no Gateway: refuse it at start."""
        if self.ingress_mode == "gateway" and not self.gateway_parent_refs:
            raise ValueError("ingress_mode gateway needs gateway_parent_refs (the Gateway(s) "
                             "the HTTPRoutes attach to, e.g. [{name: public-gateway, "
                             "namespace: gateways}])")
        return self

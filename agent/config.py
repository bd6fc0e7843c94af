"""Settings: defaults < YAML config file < environment < command line.

The effective settings are validated once, at start, and a bad configuration
fails with one `ConfigError` that lists every bad key, where it came from and
why. Environment variables are `MGMT_AGENT_<SECTION>__<KEY>` (double
underscore between levels), e.g. `MGMT_AGENT_CONTROL_PLANE__URL`. Secrets are
`SecretStr` so that `config show` and logs print them redacted; each secret
also has a `*_file` twin that is re-read on use, so rotated tokens (projected
service-account tokens, mounted secrets) are picked up without a restart.
The models live here; the layering and its error listing in `agent.config_loader`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from agent.artifacts.settings import ArtifactSettings
from agent.config_loader import load_layered
from agent.images.settings import ImageSettings
from agent.plugins.kubernetes.settings import KubernetesSettings


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret(value: SecretStr | None, path: Path | None) -> str | None:
    """The secret's value, preferring the file (re-read on every call) over the inline value."""
    if path is not None:
        return path.read_text().strip()
    return value.get_secret_value() if value is not None else None


class MLflowSettings(Section):
    """The MLflow Model Registry adapter (control_plane.kind = mlflow)."""

    tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        description="MLflow tracking server URL.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="MLflow bearer token (MLFLOW_TRACKING_TOKEN); prefer token_file.",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the MLflow bearer token, re-read on every use.",
    )
    username: str | None = Field(
        default=None,
        description="MLflow basic-auth user name; None: no basic auth.",
    )
    password: SecretStr | None = Field(default=None, description="MLflow basic-auth password.")
    ca_bundle: Path | None = Field(
        default=None,
        description="Extra CA certificates (PEM file) for the MLflow server's TLS.",
    )
    name_pattern: str = Field(default="*", description="Glob over registered model names.")
    required_tag: str | None = Field(
        default="deploy=true", description="key=value tag a registered model must carry."
    )
    aliases: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Model aliases that mean 'deploy this version'.",
    )
    stages: list[str] = Field(
        default_factory=list, description="Legacy stages to follow, e.g. ['Production']."
    )


class ControlPlaneSettings(Section):
    """Where orders come from and how to reach it."""

    kind: Literal["native", "mlflow"] = Field(
        default="native",
        description="native: the agent's HTTP protocol; mlflow: an MLflow Model Registry.",
    )
    url: str = Field(
        default="http://127.0.0.1:8080",
        description="URL of the native control plane.",
    )
    environment_id: str = Field(
        default="default",
        description="Prediction environment this agent serves (the control plane's id).",
    )
    token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the control plane; prefer token_file.",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token, re-read on every use (rotation).",
    )
    ca_bundle: Path | None = Field(
        default=None,
        description="Extra CA certificates (PEM file) for the control plane's TLS.",
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="Timeout of one request to the control plane, seconds.",
    )
    poll_interval_seconds: float = Field(
        default=5.0, gt=0,
        description="Seconds between two polls for new actions.",
    )
    long_poll_seconds: float = Field(
        default=0.0, ge=0, le=60,
        description="Server-side wait for actions (long poll), seconds; 0 disables.",
    )
    lease_seconds: int = Field(
        default=120, ge=10, le=3600,
        description="Lease on a claimed action, seconds (renewed while it runs).",
    )
    heartbeat_interval_seconds: float = Field(
        default=30.0, gt=0,
        description="Seconds between two heartbeats (environment status).",
    )
    max_consecutive_failures: int = Field(
        default=20, ge=1, description="Exit non-zero after this many failed polls in a row."
    )
    mlflow: MLflowSettings = Field(default_factory=MLflowSettings)

    def api_token(self) -> str | None:
        """The bearer token, re-read from `token_file` when set."""
        return read_secret(self.token, self.token_file)


class LeaderElectionSettings(Section):
    """Leader election on a coordination.k8s.io Lease (for agent.replicas > 1)."""

    enabled: bool = Field(
        default=False,
        description="Elect a leader on a coordination.k8s.io Lease; only the leader works.",
    )
    lease_name: str = Field(default="management-agent", description="Name of the Lease object.")
    namespace: str | None = Field(default=None, description="Defaults to the plugin namespace.")
    lease_duration_seconds: int = Field(
        default=15, ge=5,
        description="How long a lease is valid without renewal, seconds.",
    )
    renew_deadline_seconds: int = Field(
        default=10, ge=2,
        description="The leader steps down when it could not renew for this long, seconds.",
    )
    retry_period_seconds: int = Field(
        default=2, ge=1,
        description="Seconds between two attempts to acquire or renew the lease.",
    )
    identity: str | None = Field(default=None, description="Defaults to the pod name/hostname.")

    @model_validator(mode="after")
    def _timings_are_ordered(self) -> LeaderElectionSettings:
        """retry < renew deadline < lease duration, or a leader could outlive its lease."""
        if self.enabled and not (self.retry_period_seconds < self.renew_deadline_seconds
                                 < self.lease_duration_seconds):
            raise ValueError(
                "need retry_period_seconds < renew_deadline_seconds < lease_duration_seconds "
                f"(got {self.retry_period_seconds} / {self.renew_deadline_seconds} / "
                f"{self.lease_duration_seconds}): a leader must step down before others may "
                "take over")
        return self


class RuntimeSettings(Section):
    """How the daemon schedules work and shuts down."""

    workers: int = Field(
        default=4, ge=1, le=256,
        description="Actions executed in parallel (actions on one deployment are serialised).",
    )
    action_timeout_seconds: float = Field(
        default=1620.0, gt=0,
        description="Upper bound for one action, seconds (27 min).",
    )
    max_delivery_attempts: int = Field(
        default=5, ge=1, le=1000, description="An action delivered more often than this (its "
        "earlier deliveries never finished, e.g. the agent was killed running it) is completed "
        "as failing instead of being run again.",
    )
    shutdown_grace_seconds: float = Field(
        default=25.0, ge=0,
        description="Time for in-flight actions after SIGTERM, seconds.",
    )
    stall_seconds: float = Field(
        default=0.0, ge=0, description="/healthz fails when the poll loop made no attempt for this "
        "long, seconds; 0 means longer than the longest backoff (derived from the poll settings).",
    )
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)


class HealthSettings(Section):
    """The /healthz, /readyz and /metrics endpoint."""

    enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics.")
    host: str = Field(default="0.0.0.0", description="Address the health endpoint listens on.")
    port: int = Field(
        default=8081, ge=0, le=65535,
        description="Port of the health endpoint (0: any free port).",
    )


class LoggingSettings(Section):
    """Log level and format (text for people, json for log pipelines)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level.",
    )
    format: Literal["text", "json"] = Field(
        default="text",
        description="text for people, json for log pipelines.",
    )


class GitSettings(Section):
    """GitOps output of the filesystem plugin."""

    enabled: bool = Field(
        default=False,
        description="Commit and push the rendered manifests to a git repository.",
    )
    remote: str | None = Field(
        default=None,
        description="URL of the git remote; None: commit locally only.",
    )
    branch: str = Field(default="main", description="Branch the manifests are committed to.")
    author_name: str = Field(
        default="management-agent",
        description="Author name of the agent's commits.",
    )
    author_email: str = Field(
        default="management-agent@localhost",
        description="Author e-mail of the agent's commits.",
    )
    ssh_key_file: Path | None = Field(
        default=None,
        description="Private SSH key file for the remote.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="HTTPS token for the remote; prefer token_file.",
    )
    token_file: Path | None = Field(
        default=None,
        description="File holding the HTTPS token, re-read on every use.",
    )


class FilesystemSettings(Section):
    """The filesystem plugin: renders deployments into a directory (or git working copy)."""

    output_dir: Path = Field(
        default=Path("./deployments"),
        description="Directory (or git working copy) the manifests are written to.",
    )
    git: GitSettings = Field(default_factory=GitSettings)
    read_live_state: bool = Field(
        default=False, description="deployment_status reads the cluster (plugin.kubernetes "
        "access) to tell whether Argo CD / Flux has applied the committed manifests.")


class PluginSettings(Section):
    """Which plugin executes actions, and its settings."""

    name: str = Field(
        default="filesystem",
        description="Plugin that executes actions: kubernetes, filesystem or a third-party one.",
    )
    filesystem: FilesystemSettings = Field(default_factory=FilesystemSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)


class TlsSettings(Section):
    """One private-CA setting for every client; each adds to the system roots, never replaces."""

    ca_bundle: Path | None = Field(
        default=None,
        description="Extra CA certificates (PEM file) trusted in addition to the system roots "
        "by the control-plane, MLflow, registry and artifact clients; a client's own ca_bundle "
        "takes its place for that client.",
    )
    ca_config_map: str | None = Field(
        default=None,
        description="ConfigMap holding the same PEM (key ca_key) in the namespace of the pods "
        "the agent renders: mounted into storage initializers and Kaniko build Jobs.",
    )
    ca_secret: str | None = Field(
        default=None,
        description="Secret holding the same PEM (key ca_key), instead of ca_config_map.",
    )
    ca_key: str = Field(default="ca.crt", description="Key of the PEM in the ConfigMap/Secret.")

    @model_validator(mode="after")
    def _one_source(self) -> TlsSettings:
        if self.ca_config_map and self.ca_secret:
            raise ValueError("tls.ca_config_map and tls.ca_secret are mutually exclusive")
        return self


class Settings(Section):
    """The whole agent configuration."""

    control_plane: ControlPlaneSettings = Field(default_factory=ControlPlaneSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    plugin: PluginSettings = Field(default_factory=PluginSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)

    @model_validator(mode="after")
    def _one_ca_for_every_client(self) -> Settings:
        """tls.ca_bundle reaches every client whose own ca_bundle is unset."""
        ca = self.tls.ca_bundle
        if ca is not None:
            for section in (self.control_plane, self.control_plane.mlflow, self.images,
                            self.artifacts):
                if section.ca_bundle is None:
                    section.ca_bundle = ca
            probe = self.plugin.kubernetes
            if probe.public_probe_ca_bundle is None:  # the public URL may be private-CA too
                probe.public_probe_ca_bundle = ca
        return self

    @model_validator(mode="after")
    def _mlflow_models_from_the_registry_we_follow(self) -> Settings:
        """With the MLflow adapter, `models:/` URIs resolve through the same tracking server."""
        if self.control_plane.kind == "mlflow" and self.artifacts.mlflow_tracking_uri is None:
            self.artifacts.mlflow_tracking_uri = self.control_plane.mlflow.tracking_uri
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by '**********'."""
        return self.model_dump(mode="json")


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> Settings:
    """Build and validate the effective settings; raise one ConfigError listing every problem."""
    return load_layered(Settings, config_file, environ, overrides)

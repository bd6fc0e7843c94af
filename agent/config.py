"""Settings: defaults < YAML config file < environment < command line.

The effective settings are validated once, at start, and a bad configuration
fails with one `ConfigError` that lists every bad key, where it came from and
why. Environment variables are `MGMT_AGENT_<SECTION>__<KEY>` (double
underscore between levels), e.g. `MGMT_AGENT_CONTROL_PLANE__URL`. Secrets are
`SecretStr` so that `config show` and logs print them redacted; each secret
also has a `*_file` twin that is re-read on use, so rotated tokens (projected
service-account tokens, mounted secrets) are picked up without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from agent.artifacts.settings import ArtifactSettings
from agent.errors import ConfigError
from agent.images.settings import ImageSettings
from agent.plugins.kubernetes.settings import KubernetesSettings

ENV_PREFIX = "MGMT_AGENT_"
# MGMT_AGENT_CP_* configure the `control-plane` command (server and admin CLI), not the agent.
RESERVED_PREFIXES = ("MGMT_AGENT_CP_",)


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


class Settings(Section):
    """The whole agent configuration."""

    control_plane: ControlPlaneSettings = Field(default_factory=ControlPlaneSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    plugin: PluginSettings = Field(default_factory=PluginSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)

    @model_validator(mode="after")
    def _mlflow_models_from_the_registry_we_follow(self) -> Settings:
        """With the MLflow adapter, `models:/` URIs resolve through the same tracking server."""
        if self.control_plane.kind == "mlflow" and self.artifacts.mlflow_tracking_uri is None:
            self.artifacts.mlflow_tracking_uri = self.control_plane.mlflow.tracking_uri
        return self

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by '**********'."""
        return self.model_dump(mode="json")


def _set_path(tree: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


_TEXT_TYPES = (str, SecretStr, Path)
_NULLS = ("null", "Null", "NULL", "~")


def _is_text_setting(path: Sequence[str]) -> bool:
    """True when the setting at `path` holds text (a string, secret or path), not YAML."""
    model: Any = Settings
    annotation: Any = None
    for key in path:
        field = model.model_fields.get(key) if isinstance(model, type) and issubclass(
            model, BaseModel) else None
        if field is None:
            return False
        annotation = field.annotation
        model = next((arg for arg in (annotation, *get_args(annotation))
                      if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
    if get_origin(annotation) in (Union, UnionType):  # Optional[...] and other unions
        kinds = [arg for arg in get_args(annotation) if arg is not NoneType]
    else:
        kinds = [annotation]
    return all(kind in _TEXT_TYPES for kind in kinds)


def _parse_scalar(text: str, path: Sequence[str] = ()) -> Any:
    """Environment and --set values are YAML scalars: '5' is 5, 'true' is True, '[a]' a list.

    Text settings (strings, secrets, paths) take the value as given: YAML would turn a
    token '12345678' into a number, 'p4ss #1' into 'p4ss' and '#x' or '&x' into nothing.
    """
    if _is_text_setting(path) and text.strip() not in _NULLS:
        return text
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, (*prefix, str(key))))
        else:
            flat[(*prefix, str(key))] = value
    return flat


def load_settings(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> Settings:
    """Build and validate the effective settings; raise one ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    sources: dict[tuple[str, ...], str] = {}
    tree: dict[str, Any] = {}

    config_file = config_file or (
        Path(environ[f"{ENV_PREFIX}CONFIG"]) if f"{ENV_PREFIX}CONFIG" in environ else None
    )
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must hold a mapping at the top level")
        _merge(tree, loaded)
        sources.update({path: f"file {config_file}" for path in _flatten(loaded)})

    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == f"{ENV_PREFIX}CONFIG":
            continue
        if name.startswith(RESERVED_PREFIXES):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        if not all(path):
            problems.append(f"{name}: empty key segment (use '__' between levels)")
            continue
        _set_path(tree, path, _parse_scalar(raw, path))
        sources[path] = f"env {name}"

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected key.path=value")
            continue
        path = tuple(key.strip().split("."))
        _set_path(tree, path, _parse_scalar(raw, path))
        sources[path] = "--set"

    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            origin = next(
                (sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), None
            )
            where = f" (from {origin})" if origin else ""
            problems.append(f"{'.'.join(loc)}: {error['msg']}{where}")
        settings = None
    if problems:
        listing = "\n".join(f"  - {line}" for line in problems)
        raise ConfigError(f"invalid configuration ({len(problems)} problem(s)):\n{listing}")
    assert settings is not None
    return settings

"""`ServerProfile`: one prediction server's image, model path, port and paths.

Part of the `plugin.kubernetes` settings (`server_profiles`), kept in its own module so
the settings module stays short; `agent.plugins.kubernetes.settings` re-exports it.
"""

from __future__ import annotations

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
    model_path: str = Field(
        default="/mnt/models",
        description="Where the model goes in the server's container.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Port the server listens on.")
    health_path: str = Field(
        default="/health",
        description="Readiness/liveness path (model loaded, not just process up).",
    )
    predict_path: str = Field(
        default="/predict",
        description="Prediction path, appended to the reported prediction URL.",
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the metrics endpoint; None: port."
    )
    metrics_path: str = Field(
        default="/metrics",
        description="Path of the server's Prometheus metrics.",
    )
    command: list[str] | None = Field(
        default=None,
        description="Container command; None: the image's entrypoint.",
    )
    args: list[str] | None = Field(
        default=None,
        description="Container arguments; None: the image's.",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the server container.",
    )
    run_as_non_root: bool | None = Field(
        default=None, description="Override of security.run_as_non_root for this server."
    )
    run_as_user: int | None = Field(
        default=None, ge=0, description="User id for images whose own user is root "
        "(security.run_as_user wins)."
    )

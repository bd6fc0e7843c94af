"""Settings of model artifact fetching (`artifacts` section).

Owned by the artifacts package; `agent.config` composes it into `Settings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ArtifactSettings(BaseModel):
    """Defaults for fetching models; per-deployment secrets override the credentials."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    ca_bundle: Path | None = Field(
        default=None, description="Extra CA certificates for artifact downloads (PEM)."
    )
    default_credentials_secret: str | None = Field(
        default=None, description="Kubernetes secret used when a deployment names none."
    )
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    mlflow_tracking_uri: str | None = None
    max_archive_bytes: int = Field(default=64 * 1024**3, gt=0)
    max_archive_files: int = Field(default=100_000, gt=0)
    cache_dir: Path | None = None

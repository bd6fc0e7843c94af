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
        default=None,
        description="Extra CA certificates for artifact downloads (PEM); applies to S3, GCS, "
        "http(s), OCI registries and MLflow.",
    )
    default_credentials_secret: str | None = Field(
        default=None, description="Kubernetes secret used when a deployment names none."
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, Ceph, SeaweedFS...)."
    )
    s3_region: str | None = Field(
        default=None,
        description="S3 region; None: the SDK's default chain.",
    )
    s3_addressing_style: str | None = Field(
        default=None,
        description="'path' or 'virtual'; default: path for custom endpoints, auto for AWS.",
    )
    gcs_endpoint_url: str | None = Field(
        default=None, description="GCS JSON API root for an emulator (else STORAGE_EMULATOR_HOST)."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server for models:/ (else MLFLOW_TRACKING_URI)."
    )
    pvc_root: Path = Field(
        default=Path("/mnt/pvc"),
        description="Where PVCs are mounted: pvc://claim/p -> <root>/claim/p",
    )
    unpack_archives: bool = Field(
        default=True, description="fetch_model unpacks a model that is a single .tar/.tgz/.zip."
    )
    max_archive_bytes: int = Field(
        default=64 * 1024**3, gt=0,
        description="Largest model archive unpacked, bytes (64 GiB).",
    )
    max_archive_files: int = Field(
        default=100_000, gt=0,
        description="Most files a model archive may hold.",
    )
    oci_insecure_registries: list[str] = Field(
        default_factory=list,
        description="host:port of registries reached over plain http (oci:// URIs).",
    )
    download_workers: int = Field(
        default=4, ge=1, le=64, description="Files of a model downloaded in parallel."
    )
    list_page_size: int = Field(
        default=1000, ge=1, le=1000, description="Objects per listing page (S3, GCS)."
    )
    retries: int = Field(
        default=5, ge=0,
        description="Retries (attempts after the first) of transient download errors.",
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0,
        description="Connect/read timeout of downloads, seconds.",
    )
    cache_dir: Path | None = Field(
        default=None, description="Where temporary downloads go (default: the system temp dir)."
    )

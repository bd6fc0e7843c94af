"""Settings of model artifact fetching (`artifacts` section).

Owned by the artifacts package; `agent.config` composes it into `Settings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: link-local (AWS/GCP/Azure/OCI metadata at 169.254.169.254, ECS at 169.254.170.2), AWS IMDS
#: over IPv6, Alibaba's metadata, Azure's wireserver, Oracle's alternative, "this network"
DEFAULT_BLOCKED_NETWORKS = (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32",
    "168.63.129.16/32", "192.0.0.192/32", "0.0.0.0/8",
)


class ArtifactSettings(BaseModel):
    """Defaults for fetching models; per-deployment secrets override the credentials."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    ca_bundle: Path | None = Field(
        default=None,
        description="Extra CA certificates for artifact downloads (PEM), trusted in addition "
        "to the system roots; applies to S3, GCS, http(s), OCI registries and MLflow.",
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
        description="Largest size a model archive may unpack to, and of a single http(s) "
        "download, bytes (64 GiB; counted while reading, never trusting headers).",
    )
    max_archive_files: int = Field(
        default=100_000, gt=0,
        description="Most files a model archive may hold.",
    )
    max_archive_ratio: float = Field(
        default=100.0, gt=1,
        description="Unpacked bytes per compressed byte an archive may reach (zip/gzip bombs); "
        "checked once an archive unpacks to more than 64 MiB.",
    )
    file_roots: list[Path] = Field(
        default_factory=list,
        description="Directories file:// model URIs (also from MLflow) may read; empty: "
        "file:// is refused (it would read the agent's own files, e.g. its token).",
    )
    blocked_networks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKED_NETWORKS),
        description="CIDRs http(s), OCI and MLflow fetches may not connect to (default: "
        "link-local and cloud metadata addresses); every address a name resolves to is checked.",
    )
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs allowed even inside blocked_networks (an exception list).",
    )
    credentials_secret_prefix: str | None = Field(
        default=None,
        description="When set, a deployment may only name credentials Secrets whose name "
        "starts with this prefix.",
    )
    credentials_secret_label: str | None = Field(
        default=None,
        description="When set ('key=value' or 'key'), a deployment may only name credentials "
        "Secrets carrying this label.",
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

    @field_validator("blocked_networks", "allowed_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not a CIDR (e.g. 169.254.0.0/16)") from exc
        return value

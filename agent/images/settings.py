"""Settings of image building (`images` section).

Owned by the images package; `agent.config` composes it into `Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RegistryCredentials(_Section):
    """How to authenticate to the registry that receives generated images."""

    provider: Literal["auto", "anonymous", "basic", "dockerconfig", "ecr", "gcp"] = "auto"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    docker_config_file: Path | None = Field(
        default=None, description="A docker config.json (kubernetes.io/dockerconfigjson secret)."
    )
    ecr_create_repositories: bool = Field(
        default=False, description="Create missing ECR repositories on push."
    )
    aws_region: str | None = None


class ImageSettings(_Section):
    """Which builder packages models into images, and where images go."""

    builder: Literal["direct", "kaniko", "none"] = "direct"
    generated_image_repository: str | None = Field(
        default=None, description="e.g. 123.dkr.ecr.eu-west-1.amazonaws.com/models"
    )
    credentials: RegistryCredentials = Field(default_factory=RegistryCredentials)
    insecure_registries: list[str] = Field(
        default_factory=list, description="Registries reached over plain HTTP."
    )
    skip_tls_verify_registries: list[str] = Field(default_factory=list)
    ca_bundle: Path | None = Field(
        default=None, description="Extra CA certificates for registries (PEM)."
    )
    compression: Literal["none", "gzip", "zstd"] = "gzip"

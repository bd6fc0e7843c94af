"""Settings of image building (`images` section).

Owned by the images package; `agent.config` composes it into `Settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class RegistryCredentials(_Section):
    """How to authenticate to the registry that receives generated images."""

    provider: Literal["auto", "anonymous", "basic", "dockerconfig", "ecr", "acr", "gcp"] = Field(
        default="auto",
        description="How to log in; auto: by registry host (ECR, GCP, ACR with workload "
        "identity), else docker config or user.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Registry hosts (host[:port]) these credentials are sent to, besides the "
        "generated image repository's host (and a cloud provider's own hosts); every other "
        "registry, and a token service on another host, gets no credentials.",
    )
    username: str | None = Field(default=None, description="User name for basic auth.")
    password: SecretStr | None = Field(
        default=None,
        description="Password for basic auth; prefer password_file.",
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the basic-auth password, re-read on every use.",
    )
    docker_config_file: Path | None = Field(
        default=None, description="A docker config.json (kubernetes.io/dockerconfigjson secret)."
    )
    ecr_create_repositories: bool = Field(
        default=False, description="Create missing ECR repositories on push."
    )
    aws_region: str | None = Field(
        default=None,
        description="AWS region for ECR hosts that name none (proxies); a *.dkr.ecr.<region> "
        "host always uses its own region.",
    )
    ecr_endpoint_url: str | None = Field(
        default=None,
        description="ECR API endpoint override (tests: moto); AWS_ENDPOINT_URL_ECR also works.",
    )
    ecr_registry_override: str | None = Field(
        default=None,
        description="A registry host (host:port) that takes ECR logins although its name is "
        "not *.dkr.ecr.*.amazonaws.com (tests, proxies): `auto` picks ecr for it.",
    )


class KanikoSettings(_Section):
    """The Kaniko builder: one batch/v1 Job per build in the agent's namespace."""

    image: str = Field(
        default="ghcr.io/osscontainertools/kaniko:v1.28.3",
        description="Kaniko executor image: the maintained osscontainertools fork (upstream was "
        "archived in 2025; docs/images.md); point it at a mirror where ghcr.io is unreachable.",
    )
    fetcher_image: str | None = Field(
        default=None,
        description="Image of the init container running `management-agent fetch-model`; "
        "defaults to the agent's own image (MGMT_AGENT_IMAGE).",
    )
    namespace: str | None = Field(default=None, description="Defaults to the plugin namespace.")
    service_account: str | None = Field(
        default=None, description="IRSA / Workload Identity service account of the builder."
    )
    config_map: str | None = Field(
        default=None, description="ConfigMap with config.json mounted at /kaniko/.docker (ECR)."
    )
    secret_name: str | None = Field(
        default=None, description="kubernetes.io/dockerconfigjson secret (ACR, generic, OpenShift)."
    )
    model_credentials_secret: str | None = Field(
        default=None, description="Secret with artifact credentials for the fetch-model step."
    )
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "4Gi"},
        },
        description="requests/limits of the Kaniko container.",
    )
    timeout_seconds: int = Field(
        default=1200, ge=60,
        description="A build that takes longer fails (activeDeadlineSeconds), seconds.",
    )
    backoff_limit: int = Field(
        default=1, ge=0, le=10,
        description="Retries of a failed build pod (Job backoffLimit).",
    )
    ttl_seconds_after_finished: int = Field(
        default=86400, ge=0,
        description="Finished build Jobs are deleted after this long, seconds.",
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Node selector of build pods.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Tolerations of build pods.",
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations.")
    extra_args: list[str] = Field(
        default_factory=list,
        description="Extra arguments of the Kaniko executor.",
    )
    extra_volumes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra volumes of the build pod.",
    )
    extra_volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra volume mounts of the Kaniko container.",
    )
    registry_certificates: dict[str, str] = Field(
        default_factory=dict,
        description="registry host -> key in `registry_certificates_config_map`.",
    )
    registry_certificates_config_map: str | None = Field(
        default=None, description="ConfigMap holding PEM CA certificates of registries."
    )
    poll_interval_seconds: float = Field(
        default=3.0, gt=0,
        description="Seconds between two looks at a running build Job.",
    )
    log_tail_lines: int = Field(
        default=40, ge=1,
        description="Log lines of a failed build put into the failure message.",
    )

    @model_validator(mode="after")
    def _one_credential_source(self) -> KanikoSettings:
        if self.config_map and self.secret_name:
            raise ValueError(
                "images.kaniko.config_map and images.kaniko.secret_name are mutually exclusive: "
                "both are mounted at /kaniko/.docker"
            )
        if self.registry_certificates and not self.registry_certificates_config_map:
            raise ValueError(
                "images.kaniko.registry_certificates needs registry_certificates_config_map"
            )
        return self


class DependencySettings(_Section):
    """A model's requirements.txt as a cached dependency layer (direct builder; wheels only)."""

    enabled: bool = Field(
        default=True,
        description="Install the requirements the base image lacks into a layer of their own; "
        "false: requirements.txt is ignored (the base image must have everything).",
    )
    requirements_path: str = Field(
        default="requirements.txt", description="Requirements file at the model's root."
    )
    index_url: str | None = Field(
        default=None, description="Package index (pip --index-url); None: PyPI. No user info "
        "in the URL: put the login in index_credentials_file."
    )
    extra_index_urls: list[str] = Field(
        default_factory=list, description="Further indexes (pip --extra-index-url). Warning: "
        "pip takes a name from whichever index has the best version, so a package published "
        "on PyPI under a name of your private index can replace it (dependency confusion); "
        "prefer one index_url that proxies the others."
    )
    index_credentials_file: Path | None = Field(
        default=None, description="netrc file (a mounted Secret) with `machine <index host> "
        "login <user> password <token>` lines: pip gets it as a 0600 copy in its temporary "
        "HOME, each login only for its host, never on its command line."
    )
    trusted_hosts: list[str] = Field(
        default_factory=list, description="Index hosts served over plain HTTP or an untrusted "
        "certificate (pip --trusted-host)."
    )
    pip_timeout_seconds: float = Field(
        default=30.0, gt=0, description="pip's socket timeout, seconds (pip --timeout)."
    )
    install_timeout_seconds: float = Field(
        default=600.0, gt=0, description="Limit of the whole pip run, seconds."
    )
    max_layer_bytes: int = Field(
        default=2 * 1024**3, gt=0,
        description="Limit of what pip downloads and installs in the agent's temporary "
        "directory for one layer, bytes; pip is stopped beyond it.",
    )
    python_version: str | None = Field(
        default=None, pattern=r"^3\.\d+$",
        description="The base image's Python (e.g. 3.11) when it cannot be read from the image "
        "(PYTHON_VERSION env, /usr/lib/python3.X, /usr/local/lib/python3.X).",
    )
    glibc_version: str = Field(
        default="2.28", pattern=r"^2\.\d+$",
        description="Newest manylinux glibc the base image is assumed to have when it has no "
        "dpkg record of libc6 (wheels up to manylinux_<this>).",
    )
    provided_by: dict[str, list[str]] = Field(
        default_factory=lambda: {"mlflow": ["mlflow-skinny"], "xgboost": ["xgboost-cpu"]},
        description="A requirement counts as present when the base has one of these "
        "distributions (they ship the same import package).",
    )

    @model_validator(mode="after")
    def _no_login_in_index_urls(self) -> DependencySettings:
        from urllib.parse import urlsplit

        for name, urls in (("index_url", [self.index_url] if self.index_url else []),
                           ("extra_index_urls", self.extra_index_urls)):
            for url in urls:
                if "@" in urlsplit(url).netloc:
                    raise ValueError(
                        f"images.dependencies.{name} carries a login (user@host): it would be "
                        "a pip argument and a chart value; put it in "
                        "images.dependencies.index_credentials_file (netrc) instead")
        return self


class ImageSettings(_Section):
    """Which builder packages models into images, and where images go."""

    builder: Literal["direct", "kaniko", "none"] = Field(
        default="direct",
        description="direct: in the agent process; kaniko: a Job per build; none: no image build.",
    )
    generated_image_repository: str | None = Field(
        default=None, description="e.g. 123.dkr.ecr.eu-west-1.amazonaws.com/models"
    )
    repository_layout: Literal["single", "per-model", "per-deployment"] = Field(
        default="single",
        description="single: every image in generated_image_repository (tags are content "
        "addressed); per-model / per-deployment: a sub-repository per model id / deployment id.",
    )
    credentials: RegistryCredentials = Field(default_factory=RegistryCredentials)
    base_credentials: RegistryCredentials | None = Field(
        default=None,
        description="Credentials for the base image's registry when it differs from the target.",
    )
    insecure_registries: list[str] = Field(
        default_factory=list, description="Registries reached over plain HTTP."
    )
    skip_tls_verify_registries: list[str] = Field(
        default_factory=list,
        description="Registries (host:port) whose TLS certificate is not verified.",
    )
    ca_bundle: Path | None = Field(
        default=None, description="Extra CA certificates for registries (PEM)."
    )
    compression: Literal["none", "gzip", "zstd"] = Field(
        default="gzip",
        description="Layer compression of generated images.",
    )
    compression_level: int | None = Field(
        default=None, ge=0, le=19,
        description="Compression level; None: gzip 1 / zstd 3.",
    )
    gzip_store_incompressible: bool = Field(
        default=True,
        description="gzip: store (level 0) 4 MiB blocks that barely compress (model weights) "
        "instead of deflating them; ordinary multi-member gzip, ~10x faster on weights.",
    )
    layer_uid: int = Field(
        default=0, ge=0,
        description="Owner UID of the model files in the image layer.",
    )
    layer_gid: int = Field(
        default=0, ge=0,
        description="Owner GID of the model files in the image layer.",
    )
    upload_mode: Literal["stream", "chunked"] = Field(
        default="stream",
        description="stream: one streamed PATCH per blob, then PUT ?digest= (as docker push "
        "does: fewest round trips); chunked: a PATCH with Content-Range per chunk_size_bytes "
        "(registries or proxies that limit request bodies).",
    )
    chunk_size_bytes: int = Field(
        default=5 * 1024**2, ge=64 * 1024,
        description="PATCH size of chunked blob uploads and the batch size of streamed ones, "
        "bytes (5 MiB: the smallest chunk ECR accepts).",
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0,
        description="Timeout of one registry request, seconds.",
    )
    retries: int = Field(
        default=5, ge=0, le=20,
        description="Retries of transient registry errors.",
    )
    progress_bytes: int = Field(
        default=64 * 1024**2, gt=0,
        description="A progress event at least every this many bytes uploaded.",
    )
    recipe_version: str = Field(
        default="1", description="Bump to force new tags (part of the content address)."
    )
    kaniko: KanikoSettings = Field(default_factory=KanikoSettings)
    dependencies: DependencySettings = Field(default_factory=DependencySettings)

    @model_validator(mode="after")
    def _base_login_names_its_registry(self) -> ImageSettings:
        base = self.base_credentials
        if (base is not None and base.username and base.provider in ("auto", "basic")
                and not base.hosts):
            raise ValueError(
                "images.base_credentials.hosts is empty: name the base images' registry "
                "(host[:port]); the login is sent to no other host")
        return self

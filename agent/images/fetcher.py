"""The fetch-model pod piece: an init container running `management-agent fetch-model`.

One rendering for both places that fetch a model inside the cluster: the
storage initializer of a prediction server and the first step of a Kaniko
build Job. It carries the agent's artifact settings (as the environment the
agent's configuration reads), the model's credentials secret (mounted, never
in arguments or environment) and the expected digest. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.artifacts.settings import ArtifactSettings

CREDENTIALS_VOLUME = "model-credentials"
CREDENTIALS_DIR = "/var/run/secrets/model-credentials"

#: artifact settings an in-cluster `fetch-model` needs to reach the same stores as the agent
FORWARDED_SETTINGS = ("s3_endpoint_url", "s3_region", "s3_addressing_style", "gcs_endpoint_url",
                      "mlflow_tracking_uri", "max_archive_bytes", "max_archive_files")


def fetcher_env(artifacts: ArtifactSettings) -> dict[str, str]:
    """The agent's artifact settings as `MGMT_AGENT_ARTIFACTS__*` variables; only non-defaults."""
    defaults = ArtifactSettings()
    env = {}
    for key in FORWARDED_SETTINGS:
        value = getattr(artifacts, key, None)
        if value is not None and value != getattr(defaults, key, None):
            env[f"MGMT_AGENT_ARTIFACTS__{key.upper()}"] = str(value)
    return env


def fetch_model_container(
    *, name: str, image: str, uri_env: Mapping[str, Any], dest: str,
    mounts: list[dict[str, Any]],
    credentials_secret: str | None = None, credentials_dir: str = CREDENTIALS_DIR,
    digest: str | None = None, env: Mapping[str, str] | None = None,
    security: Mapping[str, Any] | None = None, pull_policy: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(init container, extra volumes) that fetch `uri` into `dest` before the main container.

    `uri_env`: the env entry (`valueFrom.secretKeyRef`) that holds the model URI.
    `mounts` must mount `dest`'s volume; the credentials secret's volume is
    added here. `env` is typically `fetcher_env(settings.artifacts)`.
    """
    args = ["fetch-model", "--uri-from-env", str(uri_env["name"]), str(dest)]
    mounts = list(mounts)
    volumes: list[dict[str, Any]] = []
    if credentials_secret:
        volumes.append({"name": CREDENTIALS_VOLUME, "secret": {"secretName": credentials_secret}})
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": credentials_dir,
                       "readOnly": True})
        args += ["--credentials-dir", credentials_dir]
    if digest:
        args += ["--digest", digest]
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": ["management-agent"],
        "args": args,
        "volumeMounts": mounts,
    }
    if pull_policy:
        container["imagePullPolicy"] = pull_policy
    container["env"] = [dict(uri_env),
                        *({"name": k, "value": v} for k, v in sorted((env or {}).items()))]
    if security is not None:
        container["securityContext"] = dict(security)
    return container, volumes

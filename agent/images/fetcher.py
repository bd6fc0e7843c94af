"""The fetch-model pod piece: an init container running `management-agent fetch-model`.

One rendering for both places that fetch a model inside the cluster: the
storage initializer of a prediction server and the first step of a Kaniko
build Job. It carries the agent's artifact settings (as the environment the
agent's configuration reads: endpoints, limits, egress exceptions), the
private CA (`tls.ca_config_map` / `tls.ca_secret`, mounted), the model's
credentials secret (mounted, never in arguments or environment) and the
expected digest. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.artifacts.settings import ArtifactSettings

if TYPE_CHECKING:
    from agent.config import TlsSettings

CREDENTIALS_VOLUME = "model-credentials"
CREDENTIALS_DIR = "/var/run/secrets/model-credentials"
CA_VOLUME = "agent-ca"
CA_FILE = "/etc/management-agent/ca/ca.crt"

#: artifact settings an in-cluster `fetch-model` needs to reach the same stores as the agent,
#: with the same limits and the same egress exceptions
FORWARDED_SETTINGS = ("s3_endpoint_url", "s3_region", "s3_addressing_style", "gcs_endpoint_url",
                      "mlflow_tracking_uri", "max_archive_bytes", "max_archive_files",
                      "max_archive_ratio", "blocked_networks", "allowed_networks")


class FetcherEnv(dict[str, str]):
    """The fetcher's environment; `ca_volume`: the volume holding tls.ca_config_map/ca_secret
    (mounted by `fetch_model_container`, and into the Kaniko executor by kaniko.py)."""

    ca_volume: dict[str, Any] | None = None


def with_env(env: Mapping[str, str], **extra: str) -> FetcherEnv:
    """A copy of `env` with `extra` variables added; a `FetcherEnv`'s CA volume goes along (a
    plain dict copy would drop it, and the pod would lose its CA)."""
    copy = FetcherEnv({**extra, **env})
    copy.ca_volume = getattr(env, "ca_volume", None)
    return copy


def fetcher_env(artifacts: ArtifactSettings, tls: TlsSettings | None = None) -> FetcherEnv:
    """The agent's artifact settings as `MGMT_AGENT_ARTIFACTS__*` variables (only
    non-defaults), and the private CA of `tls` when it names an object pods can mount."""
    defaults = ArtifactSettings()
    env = FetcherEnv()
    for key in FORWARDED_SETTINGS:
        value = getattr(artifacts, key, None)
        if value is not None and value != getattr(defaults, key, None):
            text = json.dumps(value) if isinstance(value, list) else str(value)
            env[f"MGMT_AGENT_ARTIFACTS__{key.upper()}"] = text
    if tls is not None and (tls.ca_config_map or tls.ca_secret):
        items = [{"key": tls.ca_key, "path": "ca.crt"}]
        env.ca_volume = ({"name": CA_VOLUME, "configMap": {"name": tls.ca_config_map,
                                                            "items": items}}
                         if tls.ca_config_map else
                         {"name": CA_VOLUME, "secret": {"secretName": tls.ca_secret,
                                                        "items": items}})
        env["MGMT_AGENT_TLS__CA_BUNDLE"] = CA_FILE  # added to the system roots in the pod
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
    `mounts` must mount `dest`'s volume; the credentials secret's volume (and the
    CA's, see `FetcherEnv`) is added here. `env` is typically
    `fetcher_env(settings.artifacts, settings.tls)`.
    """
    args = ["fetch-model", "--uri-from-env", str(uri_env["name"]), str(dest)]
    mounts = list(mounts)
    volumes: list[dict[str, Any]] = []
    if credentials_secret:
        volumes.append({"name": CREDENTIALS_VOLUME, "secret": {"secretName": credentials_secret}})
        mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": credentials_dir,
                       "readOnly": True})
        args += ["--credentials-dir", credentials_dir]
    ca_volume = getattr(env, "ca_volume", None)
    if ca_volume:
        volumes.append(dict(ca_volume))
        mounts.append({"name": CA_VOLUME, "mountPath": CA_FILE.rsplit("/", 1)[0],
                       "readOnly": True})
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

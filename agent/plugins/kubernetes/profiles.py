"""Server profiles: which prediction server runs a model, and how to reach it.

A profile is a base image plus where the model goes, the port, the health path
and the predict path. Built-in profiles cover MLServer, MLflow's pyfunc
scoring server, a KServe model server and custom images; `server_profiles` in
the settings add or replace profiles. An environment picks one
(`default_server_profile`), a deployment may pick another
(`spec.server_profile` or `spec.config["server_profile"]`) and override single
fields through `spec.config` (`base_image`, `model_path`, `port`,
`health_path`, `predict_path`, `command`, `args`, or a `profile` mapping).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.options import deployment_options
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

DEFAULT_PROFILE = "mlserver"

BUILTIN_PROFILES: dict[str, ServerProfile] = {
    # MLServer (Seldon): V2 inference protocol; metrics on their own port.
    "mlserver": ServerProfile(
        image="docker.io/seldonio/mlserver:1.6.1",
        model_path="/mnt/models",
        port=8080,
        health_path="/v2/health/ready",
        predict_path="/v2/models/{name}/infer",
        metrics_port=8082,
        env={
            "MLSERVER_HTTP_PORT": "{port}",
            "MLSERVER_MODELS_DIR": "{model_path}",
            "MLSERVER_MODEL_NAME": "{name}",
            "MLSERVER_MODEL_URI": "{model_path}",
        },
    ),
    # MLflow's scoring server (`mlflow models serve`): /ping and /invocations.
    "mlflow-pyfunc": ServerProfile(
        image="ghcr.io/mlflow/mlflow:v2.22.0",
        model_path="/mnt/models",
        port=8080,
        health_path="/ping",
        predict_path="/invocations",
        command=["mlflow", "models", "serve"],
        args=["-m", "{model_path}", "-h", "0.0.0.0", "-p", "{port}", "--env-manager", "local"],
        run_as_non_root=False,  # the official image runs as root
    ),
    # KServe model servers (sklearnserver, xgbserver, ...): V1 protocol.
    "kserve": ServerProfile(
        image="docker.io/kserve/sklearnserver:v0.15.0",
        model_path="/mnt/models",
        port=8080,
        health_path="/v1/models/{name}",
        predict_path="/v1/models/{name}:predict",
        args=["--model_name={name}", "--model_dir={model_path}", "--http_port={port}"],
    ),
    # A ready-built server image given per deployment (spec.model.image).
    "custom": ServerProfile(
        image=None, model_path="/mnt/models", port=8080,
        health_path="/health", predict_path="/predict",
    ),
}

# spec.config keys that override single profile fields
_OVERRIDE_KEYS = {
    "base_image": "image",
    "model_path": "model_path",
    "port": "port",
    "health_path": "health_path",
    "predict_path": "predict_path",
    "metrics_port": "metrics_port",
    "metrics_path": "metrics_path",
    "command": "command",
    "args": "args",
}


def profiles(settings: KubernetesSettings) -> dict[str, ServerProfile]:
    """Every known profile: built-ins, replaced or extended by the settings."""
    return {**BUILTIN_PROFILES, **settings.server_profiles}


def profile_name(spec: DeploymentSpec, settings: KubernetesSettings) -> str:
    """The profile a deployment uses: its own choice, else the environment's default."""
    chosen = spec.server_profile or deployment_options(spec).server_profile
    return str(chosen or settings.default_server_profile or DEFAULT_PROFILE)


def _substitute(value: str, names: dict[str, str]) -> str:
    for key, replacement in names.items():
        value = value.replace("{" + key + "}", replacement)
    return value


def resolve_profile(spec: DeploymentSpec, settings: KubernetesSettings) -> ServerProfile:
    """The effective profile of a deployment, overrides applied and placeholders filled."""
    name = profile_name(spec, settings)
    known = profiles(settings)
    if name not in known:
        raise InvalidActionError(
            f"deployment {spec.id}: unknown server profile {name!r} "
            f"(known: {', '.join(sorted(known))})"
        )
    data: dict[str, Any] = known[name].model_dump()
    options = deployment_options(spec)
    data.update(options.profile)
    overrides = options.model_dump(include=set(_OVERRIDE_KEYS), exclude_unset=True)
    for key, field in _OVERRIDE_KEYS.items():
        if key in overrides:
            data[field] = overrides[key]
    try:
        profile = ServerProfile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidActionError(
            f"deployment {spec.id}: invalid server profile overrides: {problems}"
        ) from exc
    names = {
        "name": spec.id,
        "model_path": profile.model_path,
        "port": str(profile.port),
    }
    for path_field in ("health_path", "predict_path", "metrics_path"):
        path = _substitute(getattr(profile, path_field), names)
        if not path.startswith("/"):
            raise InvalidActionError(
                f"deployment {spec.id}: server profile {path_field} {path!r} must start with '/'"
            )
        setattr(profile, path_field, path)
    if not profile.model_path.startswith("/"):
        raise InvalidActionError(
            f"deployment {spec.id}: model_path {profile.model_path!r} must be absolute"
        )
    profile.command = [_substitute(a, names) for a in profile.command] if profile.command else None
    profile.args = [_substitute(a, names) for a in profile.args] if profile.args else None
    profile.env = {k: _substitute(v, names) for k, v in profile.env.items()}
    return profile

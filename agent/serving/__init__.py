"""Serving a raw artifact: recognise the fetched model and configure the server for it.

The built-in profiles (`mlserver`, `mlflow-pyfunc`, `kserve`) run general-purpose
servers that must be told which runtime loads the model and under which name it
answers. `configure_for_model` looks at the model (file names, `MLmodel`,
`model-settings.json`), picks the runtime (`formats.detect`, `runtimes.configure`)
and returns the spec with those profile fields set in `config.profile`, so that
rendering stays pure and a rollback re-renders exactly what ran. A model the
profile cannot serve raises `InvalidActionError` before anything is applied.
Custom profiles are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from agent.errors import InvalidActionError
from agent.serving.formats import PEEK_BYTES, Kind, ModelFormat, detect
from agent.serving.runtimes import SERVER_OF_PROFILE, Runtime, configure

if TYPE_CHECKING:
    from agent.artifacts.settings import ArtifactSettings
    from agent.model import DeploymentSpec
    from agent.plugins.kubernetes.settings import KubernetesSettings

__all__ = [
    "Kind",
    "ModelFormat",
    "Runtime",
    "apply_runtime",
    "configure_for_model",
    "detect",
    "inspect_model",
]

UNINSPECTABLE = ("pvc",)  # volumes the agent itself does not mount


def inspect_model(uri: str, settings: ArtifactSettings,
                  credentials: Mapping[str, str] | None = None) -> ModelFormat:
    """List the model at `uri` and peek at the few files detection needs."""
    from agent.artifacts import open_model

    with open_model(uri, settings, credentials) as source:
        files = {f.path: f for f in source.files()}

        def read(path: str) -> bytes:
            with files[path].open() as stream:
                return bytes(stream.read(PEEK_BYTES))

        return detect(list(files), read)


def apply_runtime(spec: DeploymentSpec, base_env: Mapping[str, str],
                  runtime: Runtime) -> DeploymentSpec:
    """The spec with `runtime` in `config.profile`; the deployment's own overrides win."""
    own: dict[str, Any] = dict(spec.config.get("profile") or {})
    env = {**base_env, **runtime.env, **dict(own.get("env") or {})}
    profile = {**runtime.overrides(), **own, "env": env}
    return spec.model_copy(update={"config": {**spec.config, "profile": profile}})


def configure_for_model(spec: DeploymentSpec, settings: KubernetesSettings,
                        artifacts: ArtifactSettings,
                        credentials: Mapping[str, str] | None = None,
                        ) -> tuple[DeploymentSpec, str | None]:
    """(configured spec, what was found) for a built-in profile; (spec, None) otherwise."""
    from agent.plugins.kubernetes.profiles import profile_name, profiles, resolve_profile

    name = profile_name(spec, settings)
    server = SERVER_OF_PROFILE.get(name)
    uri = spec.model.uri
    if server is None or spec.model.image or not uri:
        return spec, None
    if uri.split(":", 1)[0].lower() in UNINSPECTABLE:
        return spec, (f"cannot inspect {uri.split(':', 1)[0]}:// models from the agent: the "
                      f"{name} profile runs with its defaults")
    fmt = inspect_model(uri, artifacts, credentials)
    model_path = resolve_profile(spec, settings).model_path
    try:
        runtime = configure(name, server, fmt, model_path, spec.id)
    except InvalidActionError as exc:
        raise InvalidActionError(f"deployment {spec.id}: {exc}") from None
    configured = apply_runtime(spec, profiles(settings)[name].env, runtime)
    return configured, f"model format: {runtime.description}"

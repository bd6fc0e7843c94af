"""`management-agent run`: wires the settings into a running agent and handles signals.

Opens the configured control plane and plugin, leader election when enabled,
and the health endpoints, then hands over to `Runtime.run`. The first
SIGTERM/SIGINT asks for a graceful stop, a second one forces the exit
(uvicorn's `force_exit`); the handler only sets flags.
"""

from __future__ import annotations

import signal

from agent.config import Settings
from agent.errors import ConfigError
from agent.health import HealthServer
from agent.leader import Leadership, LeaseLeadership
from agent.logs import register_secret
from agent.runtime import Runtime


def install_signal_handlers(runtime: Runtime) -> None:
    """The first SIGTERM/SIGINT asks for a graceful stop, a second one forces the exit
    (uvicorn's `force_exit`); the handler only sets flags."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            runtime.request_stop()
        else:
            runtime.force_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def configured_secrets(settings: Settings) -> list[str]:
    """The secrets of the configuration (files read now; re-read ones are registered on use):
    control-plane and MLflow tokens and passwords, registry passwords, the package index
    netrc's passwords."""
    from agent.config import read_secret

    cp, mlflow = settings.control_plane, settings.control_plane.mlflow
    sources = [("control_plane.token_file", cp.token, cp.token_file),
               ("control_plane.mlflow.token_file", mlflow.token, mlflow.token_file),
               ("control_plane.mlflow.password", mlflow.password, None)]
    for name, registry in (("images.credentials", settings.images.credentials),
                           ("images.base_credentials", settings.images.base_credentials)):
        if registry is not None:
            sources.append((f"{name}.password_file", registry.password, registry.password_file))
    found = []
    for setting, value, path in sources:
        try:
            found.append(read_secret(value, path))
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {exc.filename}: "
                              f"{exc.strerror or exc}") from exc
    netrc_file = settings.images.dependencies.index_credentials_file
    if netrc_file is not None:
        from agent.errors import BuildError
        from agent.images.pip_install import netrc_passwords

        try:
            found += netrc_passwords(netrc_file)
        except OSError as exc:
            raise ConfigError(f"images.dependencies.index_credentials_file: cannot read "
                              f"{exc.filename}: {exc.strerror or exc}") from exc
        except BuildError as exc:
            raise ConfigError(str(exc)) from None
    return [secret for secret in found if secret]


def run_agent(settings: Settings, once: bool = False) -> int:
    """Wire the configured control plane, plugin, leadership and health endpoints; run."""
    from agent.controlplane import open_control_plane
    from agent.plugins import load_plugin

    for secret in configured_secrets(settings):
        register_secret(secret)
    control_plane = open_control_plane(settings)
    plugin = load_plugin(settings)
    attach = getattr(control_plane, "attach_plugin", None)
    if attach is not None:  # adapters that derive actions from the target's state
        attach(plugin)
    leadership: Leadership | None = None
    if settings.runtime.leader_election.enabled:
        leadership = LeaseLeadership(settings)
    runtime = Runtime(settings, control_plane, plugin, leadership=leadership)
    server: HealthServer | None = None
    if settings.health.enabled and not once:
        try:
            server = HealthServer(settings.health.host, settings.health.port, runtime.health,
                                  runtime.metrics)
        except OSError as exc:
            raise ConfigError(f"health.port: cannot listen on {settings.health.host}:"
                              f"{settings.health.port}: {exc.strerror or exc}") from exc
        server.start()
    install_signal_handlers(runtime)
    try:
        return runtime.run(once=once)
    finally:
        if server is not None:
            server.stop()

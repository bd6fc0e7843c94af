"""`management-agent control-plane ...`: serve the reference control plane, or drive it.

`serve` runs the server; every other sub-command talks to a running server
over HTTP with the admin token (`--url`/`MGMT_AGENT_CP_URL`,
`--token`/`MGMT_AGENT_CP_ADMIN_TOKEN`/`MGMT_AGENT_CP_ADMIN_TOKEN_FILE`) and
prints a table, or JSON with `--json`. FastAPI and uvicorn are imported only
by `serve`, so the agent image does not need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.controlplane.server.cli_args import (
    DEFAULT_URL,
    ENV_DATABASE_URL,
    ENV_ENVIRONMENT,
    ENV_TOKEN,
    ENV_URL,
    add_arguments,
)
from agent.controlplane.server.client import AdminApiError, AdminClient
from agent.errors import ConfigError

__all__ = ["add_arguments", "main"]

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    """Run the chosen `control-plane` sub-command."""
    try:
        if args.cp_command == "serve":
            return serve(args)
        if args.cp_command == "openapi":
            return write_openapi(args.output)
        client = _client(args)
        try:
            return COMMANDS[args.cp_command](client, args)
        finally:
            client.close()
    except ConfigError as exc:
        print(f"management-agent control-plane: {exc}", file=sys.stderr)
        return 2
    except AdminApiError as exc:
        print(f"management-agent control-plane: error: {exc}", file=sys.stderr)
        return 1


# -- serve ---------------------------------------------------------------------------------------


def _admin_token(inline: str | None, path: Path | None) -> str:
    path = path or (Path(os.environ[f"{ENV_TOKEN}_FILE"])
                    if os.environ.get(f"{ENV_TOKEN}_FILE") else None)
    token = inline or (None if path else os.environ.get(ENV_TOKEN))
    if token is None and path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read admin token file {path}: {exc.strerror}") from exc
    if not token:
        raise ConfigError(
            f"no admin token: pass --admin-token(-file) or set {ENV_TOKEN} / {ENV_TOKEN}_FILE"
        )
    return token


def _database(args: argparse.Namespace) -> tuple[Path | str, str]:
    """The database target and how to name it in logs (never with its password)."""
    url = args.database_url
    url_file = os.environ.get(f"{ENV_DATABASE_URL}_FILE")
    if not url and url_file:
        try:
            url = Path(url_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {ENV_DATABASE_URL}_FILE {url_file}: "
                              f"{exc.strerror}") from exc
    if not url:
        return args.db, str(args.db.resolve())
    from agent.controlplane.server.engine import database_url

    try:
        return url, database_url(url).render_as_string(hide_password=True)
    except Exception as exc:  # sqlalchemy's ArgumentError, our ValueError
        raise ConfigError(f"invalid --database-url: {type(exc).__name__}") from None


def serve(args: argparse.Namespace) -> int:
    """Run uvicorn until SIGINT/SIGTERM; a second one forces the exit."""
    import uvicorn

    from agent.controlplane.server.app import ServerConfig, create_app

    if not 1 <= args.lease_seconds <= 3600:
        raise ConfigError("--lease-seconds must be between 1 and 3600")
    if args.max_body_bytes < 4096:
        raise ConfigError("--max-body-bytes must be at least 4096")
    os.umask(0o077)  # whatever the server creates (the SQLite file and its journals): 0600
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    target, shown = _database(args)
    config = ServerConfig(
        db_path=target, admin_token=_admin_token(args.admin_token, args.admin_token_file),
        lease_seconds=args.lease_seconds, max_body_bytes=args.max_body_bytes,
        test_endpoints=args.enable_test_endpoints,
        read_token=_admin_token(None, args.read_token_file) if args.read_token_file else None,
    )
    from agent.controlplane.server.db import DatabaseUnavailable

    try:
        app = create_app(config)
    except DatabaseUnavailable as exc:
        raise ConfigError(str(exc)) from None
    scheme = "https" if args.tls_cert else "http"
    log.info("control plane on %s://%s:%d (db %s, docs at /docs, dashboard at %s://%s:%d/ui)",
             scheme, args.host, args.port, shown, scheme, args.host, args.port)
    server = _server_class(uvicorn.Server)(uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(),
        timeout_graceful_shutdown=3, log_config=None,
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
    ))
    server.run()
    return 0


def _server_class(base: type[Any]) -> type[Any]:
    """uvicorn's Server, but a second SIGTERM forces the exit too (uvicorn itself forces
    it on a second SIGINT only): what Kubernetes and process managers send is SIGTERM."""

    class Server(base):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            super().handle_exit(sig, frame)

    return Server


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of protocol v1 (docs/openapi.json is this, pretty-printed)."""
    import tempfile

    from agent.controlplane.server.app import ServerConfig, create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(ServerConfig(db_path=Path(tmp) / "openapi.db", admin_token="unused"))
        return app.openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"


def write_openapi(output: Path | None) -> int:
    text = render_openapi()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return 0


# -- client commands -----------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> AdminClient:
    token: str | None = args.token
    if token is None and args.token_file is not None:
        token = _admin_token(None, args.token_file)
    if token is None:
        token = _admin_token(None, None)
    url = args.url or os.environ.get(ENV_URL) or DEFAULT_URL
    from agent.tls import verify_for

    verify = verify_for(args.ca_bundle, "--ca-bundle")  # adds to the system roots
    return AdminClient(url, token, verify=verify)


def _env(args: argparse.Namespace) -> str:
    return str(args.environment or os.environ.get(ENV_ENVIRONMENT) or "default")


def _pairs(items: Sequence[str], what: str, parse: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        if parse:
            import yaml

            result[key] = yaml.safe_load(value) if value else value
        else:
            result[key] = value
    return result


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {"id": args.model_id, "uri": args.model_uri, "image": args.image,
              "digest": args.digest, "credentials_secret": args.credentials_secret}
    return {key: value for key, value in fields.items() if value is not None}


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[("" if row.get(col) is None else str(row.get(col))) for col in columns]
             for row in rows]
    widths = [max([len(col), *(len(line[i]) for line in cells)]) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _emit(args: argparse.Namespace, data: Any, columns: Sequence[str] | None = None) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    elif isinstance(data, list):
        _print_table(data, columns or [])
    else:
        width = max((len(key) for key in data), default=0)
        for key, value in data.items():
            text = json.dumps(value) if isinstance(value, dict | list) else value
            print(f"{key.ljust(width)}  {'' if text is None else text}")


def _finish(client: AdminClient, args: argparse.Namespace, env_id: str,
            action: dict[str, Any]) -> int:
    """Print the enqueued action; with --wait, stream its events until its result."""
    if args.wait > 0:
        from agent.controlplane.server.progress import Printer, follow_action

        # with --json, stdout holds the JSON document only: the progress goes to stderr
        printer = Printer(sys.stderr if args.json else sys.stdout)
        action = follow_action(client, env_id, action, args.wait, printer)
    result = action.get("result") or {}
    data = result.get("data") or {}
    summary = {
        "action": action["id"], "type": action["type"], "deployment": action["deployment_id"],
        "state": action["state"], "attempt": action["attempt"],
        "result": f"{result['status']}/{result['state']}" if result else None,
        "prediction_url": data.get("predictionUrl"), "message": data.get("message"),
    }
    _emit(args, action if args.json else {k: v for k, v in summary.items() if v is not None})
    if args.wait > 0:
        if action["state"] != "completed":
            print(f"action {action['id']} did not complete within {args.wait:g}s",
                  file=sys.stderr)
            return 1
        return 1 if result.get("status") == "failing" else 0
    return 0


def cmd_env_create(client: AdminClient, args: argparse.Namespace) -> int:
    env = client.create_environment(args.environment_id, args.name)
    if args.json:
        _emit(args, env)
    else:
        print(f"environment {env['id']} created; agent token (shown only once):")
        print(env["token"])
    return 0


def cmd_env_list(client: AdminClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_environments(), ["id", "name", "deployments", "running_deployments",
                                             "unfinished_actions", "last_heartbeat_at"])
    return 0


def cmd_env_rotate_token(client: AdminClient, args: argparse.Namespace) -> int:
    token = client.rotate_token(args.environment_id)
    _emit(args, {"environment_id": args.environment_id, "token": token})
    return 0


def cmd_deploy(client: AdminClient, args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {}
    if args.spec_file is not None:
        import yaml

        try:
            spec = yaml.safe_load(args.spec_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read spec file {args.spec_file}: {exc}") from exc
    spec["id"] = args.deployment_id
    model = {**spec.get("model", {}), **_model_fields(args)}
    if not model:
        raise ConfigError("deploy needs --model-id and --model-uri or --image (or --spec-file)")
    spec["model"] = model
    if args.replicas is not None:
        spec["replicas"] = args.replicas
    if args.request or args.limit:
        resources = spec.setdefault("resources", {})
        resources.setdefault("requests", {}).update(_pairs(args.request, "--request"))
        resources.setdefault("limits", {}).update(_pairs(args.limit, "--limit"))
    if args.env:
        spec.setdefault("env", {}).update(_pairs(args.env, "--env"))
    if args.config:
        spec.setdefault("config", {}).update(_pairs(args.config, "--config", parse=True))
    if args.server_profile:
        spec["server_profile"] = args.server_profile
    env_id = _env(args)
    return _finish(client, args, env_id, client.deploy(env_id, spec)["action"])


def cmd_replace(client: AdminClient, args: argparse.Namespace) -> int:
    env_id = _env(args)
    accepted = client.replace(env_id, args.deployment_id, {"model": _model_fields(args)})
    return _finish(client, args, env_id, accepted["action"])


def cmd_stop(client: AdminClient, args: argparse.Namespace) -> int:
    env_id = _env(args)
    return _finish(client, args, env_id, client.stop(env_id, args.deployment_id)["action"])


def cmd_relaunch(client: AdminClient, args: argparse.Namespace) -> int:
    env_id = _env(args)
    return _finish(client, args, env_id, client.relaunch(env_id, args.deployment_id)["action"])


def cmd_status(client: AdminClient, args: argparse.Namespace) -> int:
    env_id = _env(args)
    return _finish(client, args, env_id, client.request_status(env_id, args.deployment_id))


def cmd_list(client: AdminClient, args: argparse.Namespace) -> int:
    rows = client.list_deployments(_env(args))
    for row in rows:
        row["model"] = row["spec"].get("model", {}).get("id")
    _emit(args, rows, ["id", "desired", "state", "status", "model", "current_model_id",
                       "prediction_url", "unfinished_actions", "updated_at"])
    return 0


def cmd_show(client: AdminClient, args: argparse.Namespace) -> int:
    _emit(args, client.get_deployment(_env(args), args.deployment_id))
    return 0


def cmd_events(client: AdminClient, args: argparse.Namespace) -> int:
    if args.follow:
        from agent.controlplane.server.progress import Printer, follow_events

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follower ends
            follow_events(client, _env(args), args.deployment_id, args.limit, Printer())
        return 0
    rows = client.events(_env(args), args.deployment_id, limit=args.limit)
    _emit(args, rows, ["time", "deployment_id", "action_id", "source", "level", "message"])
    return 0


def cmd_actions(client: AdminClient, args: argparse.Namespace) -> int:
    rows = client.list_actions(_env(args), args.deployment_id)
    for row in rows:
        result = row.get("result") or {}
        row["result"] = f"{result['status']}/{result['state']}" if result else None
    _emit(args, rows, ["id", "type", "deployment_id", "state", "attempt", "lease_owner",
                       "result", "created_at"])
    return 0


COMMANDS: dict[str, Callable[[AdminClient, argparse.Namespace], int]] = {
    "env-create": cmd_env_create,
    "env-list": cmd_env_list,
    "env-rotate-token": cmd_env_rotate_token,
    "deploy": cmd_deploy,
    "replace": cmd_replace,
    "stop": cmd_stop,
    "relaunch": cmd_relaunch,
    "status": cmd_status,
    "list": cmd_list,
    "show": cmd_show,
    "events": cmd_events,
    "actions": cmd_actions,
}

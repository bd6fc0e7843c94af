"""`management-agent control-plane ...`: serve the reference control plane, or drive it.

`serve` runs the server; every other sub-command talks to a running server
over HTTP with the admin token (`--url`/`MGMT_AGENT_CP_URL`,
`--token`/`MGMT_AGENT_CP_ADMIN_TOKEN`/`MGMT_AGENT_CP_ADMIN_TOKEN_FILE`) and
prints a table, or JSON with `--json`. FastAPI and uvicorn are imported only
by `serve`, so the agent image does not need them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.controlplane.server.client import AdminApiError, AdminClient
from agent.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8080"
ENV_URL = "MGMT_AGENT_CP_URL"
ENV_TOKEN = "MGMT_AGENT_CP_ADMIN_TOKEN"
ENV_ENVIRONMENT = "MGMT_AGENT_CP_ENVIRONMENT"
ENV_DATABASE_URL = "MGMT_AGENT_CP_DATABASE_URL"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `control-plane` sub-command tree."""
    commands = parser.add_subparsers(dest="cp_command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the reference control plane")
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("MGMT_AGENT_CP_PORT", 8080)),
                       help="listen port (default 8080, or env MGMT_AGENT_CP_PORT)")
    serve.add_argument("--db", type=Path, default=Path(os.environ.get(
        "MGMT_AGENT_CP_DB", "control-plane.db")), help="SQLite file (default ./control-plane.db)")
    serve.add_argument("--database-url", default=os.environ.get(ENV_DATABASE_URL),
                       help="a postgresql:// (or sqlite:///) URL instead of --db; prefer env "
                       f"{ENV_DATABASE_URL} or {ENV_DATABASE_URL}_FILE: it holds a password")
    serve.add_argument("--tls-cert", type=Path, default=os.environ.get("MGMT_AGENT_CP_TLS_CERT"),
                       help="serve HTTPS with this PEM certificate (chain)")
    serve.add_argument("--tls-key", type=Path, default=os.environ.get("MGMT_AGENT_CP_TLS_KEY"),
                       help="the certificate's PEM private key")
    serve.add_argument("--admin-token", help=f"admin token (or env {ENV_TOKEN})")
    serve.add_argument("--admin-token-file", type=Path, help=f"file with it ({ENV_TOKEN}_FILE)")
    serve.add_argument("--lease-seconds", type=int, default=120,
                       help="lease length when an agent does not ask for one (default 120)")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    openapi = commands.add_parser("openapi", help="print the protocol's OpenAPI document")
    openapi.add_argument("--output", type=Path, help="write to this file instead of stdout")

    def client_command(name: str, help_text: str, env: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", help=f"control plane URL (env {ENV_URL}, default {DEFAULT_URL})")
        sub.add_argument("--token", help=f"admin token (env {ENV_TOKEN})")
        sub.add_argument("--token-file", type=Path, help=f"file with it (env {ENV_TOKEN}_FILE)")
        sub.add_argument("--ca-bundle", type=Path, help="CA bundle for an https URL")
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if env:
            sub.add_argument("-E", "--environment", help=f"environment id (env {ENV_ENVIRONMENT}, "
                             "default 'default')")
        return sub

    def add_wait(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                         help="wait up to this long for the action to complete; exit 1 if it "
                         "fails or does not complete")

    def add_model(sub: argparse.ArgumentParser, required: bool) -> None:
        sub.add_argument("--model-id", required=required, help="control-plane model id")
        source = sub.add_mutually_exclusive_group(required=required)
        source.add_argument("--model-uri", help="artifact URI (s3://, gs://, https://, oci://, "
                            "file://, models:/)")
        source.add_argument("--image", help="a ready-built image (no build)")
        sub.add_argument("--digest", help="expected model digest sha256:...")
        sub.add_argument("--credentials-secret", help="Kubernetes secret with artifact creds")

    create = client_command("env-create", "create an environment; prints its agent token", False)
    create.add_argument("environment_id", metavar="ENVIRONMENT")
    create.add_argument("--name", help="display name")
    client_command("env-list", "list environments", False)
    rotate = client_command("env-rotate-token", "replace an environment's agent token", False)
    rotate.add_argument("environment_id", metavar="ENVIRONMENT")

    deploy = client_command("deploy", "create a deployment and enqueue its start")
    deploy.add_argument("deployment_id", metavar="DEPLOYMENT")
    add_model(deploy, required=False)
    deploy.add_argument("--spec-file", type=Path,
                        help="a DeploymentSpec as JSON/YAML; flags override its fields")
    deploy.add_argument("--replicas", type=int)
    deploy.add_argument("--request", action="append", default=[], metavar="RES=QTY",
                        help="resource request, e.g. cpu=100m (repeatable)")
    deploy.add_argument("--limit", action="append", default=[], metavar="RES=QTY",
                        help="resource limit, e.g. memory=1Gi (repeatable)")
    deploy.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable of the server (repeatable)")
    deploy.add_argument("--server-profile", help="server profile name")
    deploy.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="plugin setting (repeatable; value parsed as YAML)")
    add_wait(deploy)

    replace = client_command("replace", "replace a deployment's model")
    replace.add_argument("deployment_id", metavar="DEPLOYMENT")
    add_model(replace, required=True)
    add_wait(replace)

    for name, help_text in (("stop", "stop a deployment"),
                            ("relaunch", "relaunch a deployment with its stored spec")):
        sub = client_command(name, help_text)
        sub.add_argument("deployment_id", metavar="DEPLOYMENT")
        add_wait(sub)

    status = client_command("status", "request a status report from the agent "
                            "(deployment_status, or environment_status without DEPLOYMENT)")
    status.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")
    add_wait(status)

    client_command("list", "list deployments with their state")
    show = client_command("show", "show one deployment")
    show.add_argument("deployment_id", metavar="DEPLOYMENT")
    events = client_command("events", "event history of a deployment (or the environment)")
    events.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")
    events.add_argument("--limit", type=int, default=200)
    actions = client_command("actions", "list actions, newest first")
    actions.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")


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
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    target, shown = _database(args)
    config = ServerConfig(
        db_path=target, admin_token=_admin_token(args.admin_token, args.admin_token_file),
        lease_seconds=args.lease_seconds,
    )
    from agent.controlplane.server.db import DatabaseUnavailable

    try:
        app = create_app(config)
    except DatabaseUnavailable as exc:
        raise ConfigError(str(exc)) from None
    scheme = "https" if args.tls_cert else "http"
    log.info("control plane on %s://%s:%d (db %s, docs at /docs)", scheme, args.host, args.port,
             shown)
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
    verify: bool | str = str(args.ca_bundle) if args.ca_bundle else True
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
    """Print the enqueued action; with --wait, wait for its result."""
    if args.wait > 0:
        action = client.wait_action(env_id, action["id"], args.wait)
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

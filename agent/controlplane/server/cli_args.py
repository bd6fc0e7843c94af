"""The `control-plane` sub-command tree: every option, apart from what the commands do.

`agent.controlplane.server.cli` runs them; the environment variable names live
here because the option help quotes them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8080"
ENV_URL = "MGMT_AGENT_CP_URL"
ENV_TOKEN = "MGMT_AGENT_CP_ADMIN_TOKEN"
ENV_ENVIRONMENT = "MGMT_AGENT_CP_ENVIRONMENT"
ENV_DATABASE_URL = "MGMT_AGENT_CP_DATABASE_URL"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `control-plane` sub-command tree."""
    commands = parser.add_subparsers(dest="cp_command", required=True, metavar="COMMAND")
    _add_serve(commands)
    openapi = commands.add_parser("openapi", help="print the protocol's OpenAPI document")
    openapi.add_argument("--output", type=Path, help="write to this file instead of stdout")
    _add_environment_commands(commands)
    _add_deployment_commands(commands)
    _add_query_commands(commands)


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    serve.add_argument("--read-token-file", type=Path,
                       default=os.environ.get("MGMT_AGENT_CP_READ_TOKEN_FILE"),
                       help="file with a token that logs in to the dashboard read-only "
                       "(env MGMT_AGENT_CP_READ_TOKEN_FILE)")
    serve.add_argument("--lease-seconds", type=int, default=120,
                       help="lease length when an agent does not ask for one (default 120)")
    serve.add_argument("--max-body-bytes", type=int,
                       default=int(os.environ.get("MGMT_AGENT_CP_MAX_BODY_BYTES", 1024 * 1024)),
                       help="larger request bodies get 413 (default 1 MiB, or env "
                       "MGMT_AGENT_CP_MAX_BODY_BYTES)")
    serve.add_argument("--enable-test-endpoints", action="store_true",
                       default=os.environ.get("MGMT_AGENT_CP_ENABLE_TEST_ENDPOINTS") == "true",
                       help="serve POST .../actions:raw (unvalidated actions, for testing "
                       "agents; env MGMT_AGENT_CP_ENABLE_TEST_ENDPOINTS=true). Never in "
                       "production")
    serve.add_argument("--log-level", default="INFO",
                       choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _client_command(commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                    help_text: str, env: bool = True) -> argparse.ArgumentParser:
    """A sub-command that talks to a running server: connection and output options."""
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


def _add_wait(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                     help="wait up to this long for the action to complete, printing its "
                     "events as they arrive; exit 1 if it fails or does not complete")


def _add_model(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument("--model-id", required=required, help="control-plane model id")
    source = sub.add_mutually_exclusive_group(required=required)
    source.add_argument("--model-uri", help="artifact URI (s3://, gs://, https://, oci://, "
                        "file://, models:/)")
    source.add_argument("--image", help="a ready-built image (no build)")
    sub.add_argument("--digest", help="expected model digest sha256:...")
    sub.add_argument("--credentials-secret", help="Kubernetes secret with artifact creds")


def _add_environment_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                              ) -> None:
    create = _client_command(commands, "env-create",
                             "create an environment; prints its agent token", False)
    create.add_argument("environment_id", metavar="ENVIRONMENT")
    create.add_argument("--name", help="display name")
    _client_command(commands, "env-list", "list environments", False)
    rotate = _client_command(commands, "env-rotate-token",
                             "replace an environment's agent token", False)
    rotate.add_argument("environment_id", metavar="ENVIRONMENT")


def _add_deployment_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                             ) -> None:
    deploy = _client_command(commands, "deploy", "create a deployment and enqueue its start")
    deploy.add_argument("deployment_id", metavar="DEPLOYMENT")
    _add_model(deploy, required=False)
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
    _add_wait(deploy)

    replace = _client_command(commands, "replace", "replace a deployment's model")
    replace.add_argument("deployment_id", metavar="DEPLOYMENT")
    _add_model(replace, required=True)
    _add_wait(replace)

    for name, help_text in (("stop", "stop a deployment"),
                            ("relaunch", "relaunch a deployment with its stored spec")):
        sub = _client_command(commands, name, help_text)
        sub.add_argument("deployment_id", metavar="DEPLOYMENT")
        _add_wait(sub)

    status = _client_command(commands, "status", "request a status report from the agent "
                             "(deployment_status, or environment_status without DEPLOYMENT)")
    status.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")
    _add_wait(status)


def _add_query_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _client_command(commands, "list", "list deployments with their state")
    show = _client_command(commands, "show", "show one deployment")
    show.add_argument("deployment_id", metavar="DEPLOYMENT")
    events = _client_command(commands, "events",
                             "event history of a deployment (or the environment)")
    events.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")
    events.add_argument("--limit", type=int, default=200)
    events.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new events (and each action's result) as they "
                        "arrive, until Ctrl-C")
    actions = _client_command(commands, "actions", "list actions, newest first")
    actions.add_argument("deployment_id", metavar="DEPLOYMENT", nargs="?")

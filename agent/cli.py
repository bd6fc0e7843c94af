"""The `management-agent` command: parses, configures logging, hands over. No logic.

Sub-commands that belong to a package live in that package; each such module
provides `add_arguments(parser)` and `main(args) -> int` and keeps its heavy
imports (FastAPI, the Kubernetes client, boto3) inside `main`, so building
the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from agent import __version__
from agent.config import Settings, load_settings
from agent.errors import AgentError, ConfigError

# sub-command -> (module implementing it, one-line help)
DELEGATED: dict[str, tuple[str, str]] = {
    "control-plane": ("agent.controlplane.server.cli", "run or drive the reference control plane"),
    "doctor": ("agent.doctor", "preflight: check control plane, cluster, registry and storage"),
    "fetch-model": ("agent.artifacts.cli", "download a model URI into a directory"),
    "secrets": ("agent.artifacts.secrets", "migrate artifact credential secrets between formats"),
}


def _add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, help="YAML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting, e.g. --set control_plane.url=http://cp:8080 (repeatable)",
    )
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"])


def _settings_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if getattr(args, "log_level", None):
        overrides.append(f"logging.level={args.log_level}")
    if getattr(args, "log_format", None):
        overrides.append(f"logging.format={args.log_format}")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="management-agent",
        description="Deploys ML models to Kubernetes on orders from a control plane.",
    )
    parser.add_argument("--version", action="version", version=f"management-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the agent daemon")
    _add_settings_arguments(run)
    run.add_argument("--once", action="store_true", help="process pending actions, then exit")

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    _add_settings_arguments(show)
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")

    for name, (module_name, help_text) in DELEGATED.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a sub-command whose package is not installed in this build
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(delegate=module_name)
        module.add_arguments(sub)
    return parser


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, overrides=_settings_overrides(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `management-agent` command."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "delegate", None):
            return int(importlib.import_module(args.delegate).main(args))
        settings = _load(args)
        if args.command == "config":
            data = settings.redacted()
            dump = yaml.safe_dump(data, sort_keys=False)
            text = json.dumps(data, indent=2) if args.json else dump
            print(text)
            return 0
        from agent.daemon import run_agent
        from agent.logs import configure_logging

        configure_logging(settings.logging)
        return run_agent(settings, once=args.once)
    except ConfigError as exc:
        print(f"management-agent: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"management-agent: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

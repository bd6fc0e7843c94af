"""tools/harness up|down|status|env|logs: real test servers on 127.0.0.1 (docs/testing.md)."""

from __future__ import annotations

import argparse
import sys

from . import servers
from .layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "install what is missing, start what is not running"),
                       ("down", "stop the servers (by PID); data and caches stay")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--only", help="comma-separated servers or groups, e.g. kube,registries")
    commands.add_parser("status", help="what runs where")
    commands.add_parser("env", help="print .harness/env")
    logs = commands.add_parser("logs", help="tail the server logs")
    logs.add_argument("name", nargs="?", help="one server (registry, s3, mlflow, kube, ...)")
    logs.add_argument("-n", "--lines", type=int, default=40)
    args = parser.parse_args(argv)
    layout = Layout.default()
    try:
        if args.command == "up":
            servers.up(layout, args.only)
        elif args.command == "down":
            servers.down(layout, args.only)
        elif args.command == "status":
            return servers.status(layout)
        elif args.command == "env":
            if not layout.env_file.exists():
                print("no .harness/env: run tools/harness up", file=sys.stderr)
                return 1
            sys.stdout.write(layout.env_file.read_text())
        else:
            servers.logs(layout, args.name, args.lines)
    except RuntimeError as err:
        print(f"harness: {args.command} failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

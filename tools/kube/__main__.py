"""Launcher: `python -m tools.kube serve --host H --port P --state-dir D --kubeconfig-out F`."""

from __future__ import annotations

import argparse
import base64
import importlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tools.kube.apiserver import KubeServer

log = logging.getLogger("tools.kube")
ADMIN_TOKEN = "admin-token"


def kubeconfig(url: str, token: str = ADMIN_TOKEN, namespace: str = "default",
               ca_cert: Path | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": url}
    if ca_cert is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_cert.read_bytes()).decode()
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": cluster}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "admin",
                                                     "namespace": namespace}}],
        "preferences": {},
    }


def write_kubeconfig(path: Path, url: str, token: str = ADMIN_TOKEN,
                     ca_cert: Path | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig(url, token, ca_cert=ca_cert), sort_keys=False))
    path.chmod(0o600)


def parse_restricted(values: list[str]) -> dict[str, tuple[str, str]]:
    out = {}
    for v in values:
        token, _, who = v.partition("=")
        ns, _, sa = who.partition("/")
        if not token or not ns or not sa:
            raise SystemExit(f"--restricted-token expects TOKEN=namespace/serviceaccount, "
                             f"got {v!r}")
        out[token] = (ns, sa)
    return out


def start_controllers(kubeconfig_path: Path, state_dir: Path, stop: threading.Event) -> None:
    try:
        mod = importlib.import_module("tools.kube.controllers")
    except ImportError as exc:
        log.warning("controllers not started: tools.kube.controllers unavailable (%s)", exc)
        return
    start = getattr(mod, "start", None)
    if start is None:
        log.warning("controllers not started: tools.kube.controllers has no start()")
        return
    start(str(kubeconfig_path), str(state_dir), stop)
    log.info("controllers started")


def serve(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(exist_ok=True)
    server = KubeServer((args.host, args.port), state_dir, parse_restricted(args.restricted_token),
                        persist=not args.in_memory, tls=args.tls,
                        disabled_groups=tuple(args.without_api_group))
    kc = Path(args.kubeconfig_out).resolve()
    write_kubeconfig(kc, server.url, ca_cert=server.ca_cert)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True, name="kube-apiserver")
    thread.start()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"READY {server.url}", flush=True)
    log.info("serving on %s (state %s, kubeconfig %s)", server.url, state_dir, kc)
    if not args.no_controllers:
        start_controllers(kc, state_dir, stop)
    while not stop.wait(0.5):
        pass
    log.info("stopping")
    server.shutdown_all()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kube")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="run the Kubernetes API stand-in")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--kubeconfig-out", required=True)
    p.add_argument("--no-controllers", action="store_true")
    p.add_argument("--in-memory", action="store_true", help="do not persist state.json")
    p.add_argument("--without-api-group", action="append", default=[], metavar="GROUP",
                   help="do not serve this API group (e.g. route.openshift.io, as on a "
                        "cluster that is not OpenShift); repeatable")
    p.add_argument("--restricted-token", action="append", default=[],
                   metavar="TOKEN=NS/SA", help="a token acting as a ServiceAccount under RBAC")
    p.add_argument("--tls", action="store_true",
                   help="serve HTTPS with a throw-away CA (kubectl/helm send tokens only over "
                        "TLS: needed for --restricted-token with them)")
    p.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())

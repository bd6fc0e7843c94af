"""`up`, `down`, `status`: drive the servers in order, in parallel where it pays."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import baseimage, install, netns, procs, tlsgen
from .base import Context, Server
from .gcs import FakeGcs
from .kube import Kube
from .layout import Layout, State
from .mlflow import Mlflow
from .moto import Moto
from .postgres import Postgres
from .procs import Proc, wait_until
from .registry import PlainRegistry, TlsRegistry, TokenRegistry, TokenService
from .s3 import SeaweedS3

# Order of preparation and of the readiness waits.
SERVERS: tuple[type[Server], ...] = (PlainRegistry, TlsRegistry, TokenService, TokenRegistry,
                                     SeaweedS3, Moto, FakeGcs, Mlflow, Postgres, Kube)
NEEDS = {"registry-token": ("token-service",), "mlflow": ("s3",)}
GROUPS = {"registries": ("registry", "registry-tls", "token-service", "registry-token")}
VENV_SERVERS = {"s3", "moto", "gcs", "mlflow"}
say = install.say


def names(only: str | None, with_needs: bool = True) -> list[str]:
    known = [cls.name for cls in SERVERS]
    if not only:
        return known
    wanted: set[str] = set()
    for item in only.replace(",", " ").split():
        if item not in known and item not in GROUPS:
            raise SystemExit(f"unknown server {item!r}; known: {', '.join(known + list(GROUPS))}")
        wanted.update(GROUPS.get(item, (item,)))
    for name in list(wanted) if with_needs else []:
        wanted.update(NEEDS.get(name, ()))
    return [n for n in known if n in wanted]


def _servers(ctx: Context, selected: Iterable[str]) -> list[Server]:
    chosen = set(selected)
    return [cls(ctx) for cls in SERVERS if cls.name in chosen]


def up(layout: Layout, only: str | None) -> None:
    started_at = time.monotonic()
    net = layout.network()
    net.ensure_bridge()  # before anything binds the harness address
    say(f"network: bridge {net.bridge}, harness address {net.gateway}, pods {net.subnet}")
    ctx = Context(layout, State(layout))
    selected = names(only)
    _install(layout, selected)
    servers = _servers(ctx, selected)
    restart, kept = _plan(servers)
    started: list[Server] = []
    pool = ThreadPoolExecutor(1)
    try:
        # Start everything at once (MLflow alone needs 10-60 s); kube last, because it
        # reads the others' addresses from the env file, which is complete once they run.
        for server in sorted(restart, key=lambda s: s.name == "kube"):
            if server.name == "kube":
                write_env(ctx)
            _start(server)
            started.append(server)
        ctx.state.save()
        registries = [s for s in servers if s.name in ("registry", "registry-tls")]
        push = pool.submit(_push_base, layout, registries)  # while the slow ones start
        for server in restart:
            wait_until(server.ready, server.proc, server.timeout)
            server.after_start()
            say(f"{server.name}: ready on {server.hostport}")
        push.result()
        if any(s.name == "kube" for s in restart) and "HARNESS_INGRESS_URL" not in environment(ctx):
            say("kube: no ingress URL reported yet (HARNESS_INGRESS_URL unset)")
    except BaseException:
        for server in reversed(started):
            server.proc.stop()
        raise
    finally:
        pool.shutdown(wait=True)
        ctx.state.save()
    write_env(ctx)
    say(f"up in {time.monotonic() - started_at:.1f}s ({len(restart)} started, {len(kept)} kept); "
        f"env in {layout.env_file}")


def _plan(servers: list[Server]) -> tuple[list[Server], list[Server]]:
    """Split into (to start, to keep): alive and answering is kept, unless what it
    needs is being restarted."""
    restart: list[Server] = []
    kept: list[Server] = []
    for server in servers:
        why_not = server.available()
        if why_not:
            say(f"{server.name}: skipped ({why_not})")
            continue
        restarted = {s.name for s in restart}
        needs_restart = any(dep in restarted for dep in NEEDS.get(server.name, ()))
        if server.proc.alive() and server.ready() and not needs_restart:
            kept.append(server)
        else:
            restart.append(server)
    return restart, kept


def _install(layout: Layout, selected: list[str]) -> None:
    install.apt()
    jobs = [install.helm_kubectl, tlsgen.ensure_certs]
    if VENV_SERVERS & set(selected):
        jobs.append(install.venv)
    if "registry" in selected:
        jobs.append(baseimage.ensure_built)
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job, layout) for job in jobs]:
            future.result()


def _start(server: Server) -> None:
    server.proc.stop()  # a live one being restarted: free its port first, to keep it
    server.prepare()
    argv, env = server.command()
    server.proc.start(argv, env)


def _push_base(layout: Layout, registries: list[Server]) -> None:
    """Push the cached base image to the plain and TLS registries once they answer."""
    if not (baseimage.oci_dir(layout) / "index.json").exists():
        return
    for registry in registries:
        wait_until(registry.ready, registry.proc, registry.timeout)
        if registry.name == "registry":
            baseimage.push(layout, registry.hostport)
        else:
            creds = f"harness:{registry.state.secret('registry-tls-password')}"
            baseimage.push(layout, registry.hostport, layout.tls / "certs.d", creds)


def environment(ctx: Context) -> dict[str, str]:
    layout = ctx.layout
    values = {"HARNESS_DIR": str(layout.dir), "HARNESS_BIN": str(layout.bin),
              "HARNESS_VENV": str(layout.venv),
              "HARNESS_HELM": str(layout.bin / "helm"),
              "HARNESS_KUBECTL": str(layout.bin / "kubectl"),
              "HARNESS_CA_CERT": str(ctx.ca), "HARNESS_CERT_DIR": str(layout.tls / "certs.d"),
              "HARNESS_BASE_OCI": f"{baseimage.oci_dir(layout)}:{baseimage.TAG}",
              # the harness address: every server listens there, the host and pods reach it
              "HARNESS_HOST": layout.host}
    for server in _servers(ctx, [cls.name for cls in SERVERS]):
        if server.proc.alive():
            values.update(server.exports())
    ref = f"{baseimage.REPOSITORY}:{baseimage.TAG}"
    if "HARNESS_REGISTRY" in values:
        values["HARNESS_BASE_IMAGE"] = f"{values['HARNESS_REGISTRY']}/{ref}"
    if "HARNESS_REGISTRY_TLS" in values:
        values["HARNESS_BASE_IMAGE_TLS"] = f"{values['HARNESS_REGISTRY_TLS']}/{ref}"
    return values


def write_env(ctx: Context) -> None:
    lines = ["# written by tools/harness up; sourceable (set -a; . .harness/env)"]
    lines += [f"{key}={shlex.quote(value)}" for key, value in sorted(environment(ctx).items())]
    tmp = ctx.layout.env_file.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(ctx.layout.env_file)


def down(layout: Layout, only: str | None) -> None:
    ctx = Context(layout, State(layout))
    selected = set(names(only, with_needs=False))
    chosen = _servers(ctx, selected)
    with ThreadPoolExecutor(max(1, len(chosen))) as pool:  # SIGTERM all, then wait for all
        for server, stopped in zip(chosen, pool.map(lambda s: s.proc.stop(), chosen), strict=True):
            if stopped:
                say(f"{server.name}: stopped")
    if not only:  # pid files of servers this version no longer knows
        for pidfile in layout.pids.glob("*.pid"):
            if Proc(layout, pidfile.stem).stop():
                say(f"{pidfile.stem}: stopped")
    write_env(ctx)
    if not only:
        for pid, cmdline in procs.stragglers(layout.dir):
            say(f"stopping straggler {pid} (its command line names {layout.dir}): {cmdline[:100]}")
            procs.terminate(pid)
    if not only:  # every server is stopped: nothing listens on the harness address now
        net = layout.network()
        removed = net.remove()
        if removed:
            say(f"network: removed {', '.join(removed)}")
        left = netns.leftovers(net)
        if left:
            say(f"warning: network of this harness still present: {left}")
    leftovers = _network_leftovers()
    if leftovers:
        say(f"warning: network leftovers not created by the harness itself: {leftovers}")


def _network_leftovers() -> list[str]:
    found = [p.name for p in Path("/sys/class/net").glob("*")
             if p.name.startswith(("cni", "podman"))]
    try:
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    except OSError:
        rules = ""
    found += [line for line in rules.splitlines() if "CNI" in line]
    return found


def status(layout: Layout) -> int:
    ctx = Context(layout, State(layout))
    down_count = 0
    for server in _servers(ctx, [cls.name for cls in SERVERS]):
        pid = server.proc.pid()
        if pid is None:
            why = server.available()
            print(f"{server.name:15} stopped{f' ({why})' if why else ''}")
            down_count += 0 if why else 1
            continue
        state = "ready" if server.ready() else "NOT READY"
        print(f"{server.name:15} {state:9} pid {pid:<8} {server.hostport}")
    env = environment(ctx)
    net = layout.network()
    print(f"network         {net.bridge} {net.gateway} {'up' if net.exists() else 'absent'} "
          f"({len(net.namespaces())} pod namespaces)")
    print(f"helm            {'present' if Path(env['HARNESS_HELM']).exists() else 'missing'}")
    print(f"base image      {env.get('HARNESS_BASE_IMAGE', 'not pushed (registry stopped)')}")
    return 0 if down_count == 0 else 3


def logs(layout: Layout, name: str | None, lines: int) -> None:
    paths = [layout.logs / f"{name}.log"] if name else sorted(layout.logs.glob("*.log"))
    for path in paths:
        if not path.exists():
            raise SystemExit(f"no log {path}")
        print(f"==> {path} <==")
        print(Proc(layout, path.stem).tail(lines))

"""nginx-backed ingress controller (ingress-nginx flavoured), plus OpenShift Routes.

Renders one nginx.conf listening on HOST:PORT (``KUBE_STANDIN_INGRESS_HOST``, default
127.0.0.1; the harness gives its address, which pods reach too), routes by Host header and
path (Exact, Prefix, ImplementationSpecific with the ingress-nginx regex form,
``rewrite-target`` and ``use-regex`` annotations; Routes with the haproxy
``rewrite-target`` annotation) to the backend Service's ready endpoints, and
answers 503 when a backend has none. The URL is written to
``STATE_DIR/ingress-url``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from .base import Controller
from .client import ApiError, Obj, is_terminating

log = logging.getLogger(__name__)

NGINX_ANN = "nginx.ingress.kubernetes.io/"
HAPROXY_REWRITE = "haproxy.router.openshift.io/rewrite-target"


@dataclass
class Location:
    regex: str  # nginx location regex (or exact path when exact=True)
    exact: bool
    upstream: str | None  # None -> 503
    rewrite: str | None = None  # (regex, target) applied with rewrite ... break
    rewrite_regex: str | None = None
    case_insensitive: bool = False
    body_size: str | None = None
    order: int = 0


@dataclass
class Server:
    host: str  # "" = default server
    locations: list[Location] = field(default_factory=list)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prefix_regex(path: str) -> str:
    p = path.rstrip("/")
    return "^/" if not p else "^" + re.escape(p).replace("\\/", "/") + "(/|$)"


class IngressController(Controller):
    name = "ingress"
    resources = ("ingresses", "ingressclasses", "services", "endpoints", "routes")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.class_name = os.environ.get("KUBE_STANDIN_INGRESS_CLASS", "nginx")
        self.dir = os.path.join(self.state_dir, "nginx")
        for sub in ("tmp", "logs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self._stop_stale_nginx()
        self.host = os.environ.get("KUBE_STANDIN_INGRESS_HOST") or "127.0.0.1"
        self.port = self._choose_port()
        self.url = f"http://{self.host}:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rendered = ""
        self.status_done: dict[str, str] = {}
        self.ensured_class = False

    def _stop_stale_nginx(self) -> None:
        """An nginx of a previous run on this state dir (launcher killed): stop it."""
        pid_file = os.path.join(self.dir, "nginx.pid")
        try:
            with open(pid_file, encoding="utf-8") as fh:
                pid = int(fh.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except (OSError, ValueError):
            return
        if "nginx" not in cmdline or self.dir not in cmdline:
            return
        log.warning("stopping the nginx (pid %d) left by a previous run", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)

    def _choose_port(self) -> int:
        wanted = os.environ.get("KUBE_STANDIN_INGRESS_PORT")
        url_file = os.path.join(self.state_dir, "ingress-url")
        if os.path.exists(url_file):
            with open(url_file, encoding="utf-8") as fh:
                previous = fh.read().strip().rsplit(":", 1)[-1]
            os.unlink(url_file)  # rewritten once nginx listens
            wanted = wanted or previous
        if wanted and wanted.isdigit():
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx does
                try:
                    s.bind((self.host, int(wanted)))
                    return int(wanted)
                except OSError:
                    log.warning("ingress port %s busy, picking another", wanted)
        with socket.socket() as s:
            s.bind((self.host, 0))
            return int(s.getsockname()[1])

    # -- model -----------------------------------------------------------------------
    def _ours(self, ing: Obj) -> bool:
        spec = ing.get("spec") or {}
        cls = spec.get("ingressClassName") or (ing["metadata"].get("annotations") or {}).get(
            "kubernetes.io/ingress.class")
        if cls:
            return bool(cls == self.class_name)
        for ic in self.items("ingressclasses"):
            ann = ic["metadata"].get("annotations") or {}
            if ann.get("ingressclass.kubernetes.io/is-default-class") == "true":
                return bool(ic["metadata"]["name"] == self.class_name)
        return False

    def _endpoints(self, ns: str, svc_name: str, port: Obj | None) -> list[str]:
        ep = self.informers["endpoints"].get(f"{ns}/{svc_name}")
        svc = self.informers["services"].get(f"{ns}/{svc_name}")
        if not ep or not svc:
            return []
        port = port or {}
        svc_ports = (svc.get("spec") or {}).get("ports") or []
        sp = None
        for cand in svc_ports:
            if ("number" in port and cand.get("port") == port.get("number")) or \
                    ("name" in port and cand.get("name") == port.get("name")) or \
                    ("targetPort" in port and str(cand.get("targetPort", cand.get("port")))
                     == str(port["targetPort"])):
                sp = cand
                break
        if sp is None and svc_ports:
            sp = svc_ports[0]
        wanted_name = (sp or {}).get("name")
        out = []
        for subset in ep.get("subsets") or []:
            ports = subset.get("ports") or []
            chosen = next((p for p in ports if p.get("name") == wanted_name), None) \
                if wanted_name else (ports[0] if ports else None)
            if chosen is None and len(ports) == 1:
                chosen = ports[0]
            if chosen is None:
                continue
            for addr in subset.get("addresses") or []:
                out.append(f"{addr['ip']}:{chosen['port']}")
        return sorted(set(out))

    def build(self) -> tuple[dict[str, Server], dict[str, list[str]]]:
        servers: dict[str, Server] = {"": Server("")}
        upstreams: dict[str, list[str]] = {}
        order = 0

        def upstream(ns: str, svc: str, port: Obj | None) -> str | None:
            addrs = self._endpoints(ns, svc, port)
            if not addrs:
                return None
            name = "u_" + hashlib.sha1(f"{ns}/{svc}/{sorted((port or {}).items())}".encode()
                                       ).hexdigest()[:12]
            upstreams[name] = addrs
            return name

        ingresses = sorted((i for i in self.items("ingresses")
                            if self._ours(i) and not is_terminating(i)),
                           key=lambda i: i["metadata"].get("creationTimestamp", ""))
        for ing in ingresses:
            md = ing["metadata"]
            ns = md.get("namespace") or "default"
            ann = md.get("annotations") or {}
            rewrite = ann.get(NGINX_ANN + "rewrite-target")
            use_regex = ann.get(NGINX_ANN + "use-regex") == "true" or bool(rewrite)
            body = ann.get(NGINX_ANN + "proxy-body-size")
            spec = ing.get("spec") or {}
            rules = list(spec.get("rules") or [])
            if spec.get("defaultBackend"):
                rules.append({"http": {"paths": [{"path": "/", "pathType": "Prefix",
                                                  "backend": spec["defaultBackend"]}]}})
            for rule in rules:
                host = rule.get("host") or ""
                server = servers.setdefault(host, Server(host))
                for p in (rule.get("http") or {}).get("paths") or []:
                    order += 1
                    path = p.get("path") or "/"
                    ptype = p.get("pathType", "ImplementationSpecific")
                    svc = (p.get("backend") or {}).get("service") or {}
                    up = upstream(ns, svc.get("name", ""), svc.get("port"))
                    if ptype == "Exact" and not use_regex:
                        loc = Location(path, True, up, order=order)
                    elif use_regex:
                        loc = Location("^" + path, False, up, case_insensitive=True, order=order)
                        if rewrite:
                            loc.rewrite_regex = "(?i)" + path
                            loc.rewrite = rewrite
                    elif ptype == "Prefix":
                        loc = Location(prefix_regex(path), False, up, order=order)
                    else:
                        loc = Location("^" + re.escape(path).replace("\\/", "/"), False, up,
                                       order=order)
                    loc.body_size = body
                    server.locations.append(loc)
        for route in self.items("routes") if self.informers["routes"].available else []:
            if is_terminating(route):
                continue
            md = route["metadata"]
            ns = md.get("namespace") or "default"
            spec = route.get("spec") or {}
            host = spec.get("host") or ""
            server = servers.setdefault(host, Server(host))
            path = spec.get("path") or "/"
            to = spec.get("to") or {}
            port = spec.get("port") or {}
            tp = port.get("targetPort")
            up = upstream(ns, to.get("name", ""),
                          {"targetPort": tp} if tp is not None else None)
            order += 1
            p = path.rstrip("/")
            loc = Location("^" + re.escape(p).replace("\\/", "/") + "(/|$)" if p else "^/",
                           False, up, order=order)
            target = (md.get("annotations") or {}).get(HAPROXY_REWRITE)
            if target is not None and p:
                loc.rewrite_regex = "^" + re.escape(p).replace("\\/", "/") + "/?(.*)"
                loc.rewrite = target.rstrip("/") + "/$1"
            server.locations.append(loc)
        return servers, upstreams

    # -- rendering ---------------------------------------------------------------------
    def render(self, servers: dict[str, Server], upstreams: dict[str, list[str]]) -> str:
        d = self.dir
        lines = [
            "worker_processes 1;", f"pid {d}/nginx.pid;", f"error_log {d}/logs/error.log warn;",
            "events { worker_connections 1024; }", "http {",
            f"  access_log {d}/logs/access.log;",
            f"  client_body_temp_path {d}/tmp/body;", f"  proxy_temp_path {d}/tmp/proxy;",
            f"  fastcgi_temp_path {d}/tmp/fastcgi;", f"  uwsgi_temp_path {d}/tmp/uwsgi;",
            f"  scgi_temp_path {d}/tmp/scgi;",
            "  client_max_body_size 1g;", "  proxy_http_version 1.1;",
            "  proxy_read_timeout 300s;", "  proxy_send_timeout 300s;",
            "  proxy_request_buffering off;",
            "  server_names_hash_bucket_size 256;",
            "  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }",
        ]
        for name, addrs in sorted(upstreams.items()):
            lines.append(f"  upstream {name} {{")
            lines += [f"    server {a} max_fails=0;" for a in addrs]
            lines.append("  }")
        for host, server in sorted(servers.items()):
            listen = f"{self.host}:{self.port}" + (" default_server" if not host else "")
            lines += ["  server {", f"    listen {listen};",
                      f"    server_name {_quote(host) if host else '_'};"]
            exact = [loc for loc in server.locations if loc.exact]
            regex = sorted((loc for loc in server.locations if not loc.exact),
                           key=lambda loc: (-len(loc.regex), loc.order))
            for loc in exact + regex:
                op = "=" if loc.exact else ("~*" if loc.case_insensitive else "~")
                lines.append(f"    location {op} {_quote(loc.regex)} {{")
                if loc.body_size:
                    lines.append(f"      client_max_body_size {loc.body_size};")
                if loc.upstream is None:
                    lines.append("      return 503;")
                else:
                    if loc.rewrite and loc.rewrite_regex:
                        lines.append(f"      rewrite {_quote(loc.rewrite_regex)} "
                                     f"{_quote(loc.rewrite)} break;")
                    lines += [
                        "      proxy_set_header Host $http_host;",
                        "      proxy_set_header X-Real-IP $remote_addr;",
                        "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                        "      proxy_set_header X-Forwarded-Proto $scheme;",
                        "      proxy_set_header Upgrade $http_upgrade;",
                        "      proxy_set_header Connection $connection_upgrade;",
                        "      proxy_next_upstream error timeout http_502 http_503;",
                        f"      proxy_pass http://{loc.upstream};",
                    ]
                lines.append("    }")
            lines += ["    location / { return 404; }", "  }"]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _nginx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nginx", "-p", self.dir, "-e", f"{self.dir}/logs/error.log",
                               "-c", f"{self.dir}/nginx.conf", *args],
                              capture_output=True, text=True, timeout=30, check=False)

    def apply(self, conf: str) -> None:
        path = os.path.join(self.dir, "nginx.conf")
        with open(path + ".new", "w", encoding="utf-8") as fh:
            fh.write(conf)
        test = subprocess.run(["nginx", "-t", "-q", "-p", self.dir, "-e",
                               f"{self.dir}/logs/error.log", "-c", path + ".new"],
                              capture_output=True, text=True, timeout=30, check=False)
        if test.returncode != 0:
            log.error("ingress: rendered nginx.conf rejected: %s", test.stderr.strip())
            return
        os.replace(path + ".new", path)
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                ["nginx", "-p", self.dir, "-e", f"{self.dir}/logs/error.log", "-c", path,
                 "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self._wait_listening()
            with open(os.path.join(self.state_dir, "ingress-url"), "w", encoding="utf-8") as fh:
                fh.write(self.url + "\n")
        else:
            res = self._nginx("-s", "reload")
            if res.returncode != 0:
                log.error("ingress: nginx reload failed: %s", res.stderr.strip())
        self.rendered = conf

    def _wait_listening(self) -> None:
        for _ in range(100):
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                self.stop.wait(0.05)

    # -- loop --------------------------------------------------------------------------
    def ensure_class(self) -> None:
        if self.ensured_class:
            return
        try:
            if self.client.get("ingressclasses", None, self.class_name) is None:
                self.client.create("ingressclasses", None, {
                    "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                    "metadata": {"name": self.class_name},
                    "spec": {"controller": "k8s.io/ingress-nginx"}})
            self.ensured_class = True
        except (ApiError, requests.RequestException) as exc:
            log.info("ingress class not created: %s", exc)

    def sync(self) -> None:
        self.ensure_class()
        servers, upstreams = self.build()
        conf = self.render(servers, upstreams)
        if conf != self.rendered or self.proc is None or self.proc.poll() is not None:
            self.apply(conf)
        self.write_status()

    def write_status(self) -> None:
        for ing in self.items("ingresses"):
            if not self._ours(ing) or is_terminating(ing):
                continue
            md = ing["metadata"]
            lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if lb and lb[0].get("ip") == self.host:
                continue
            try:
                self.client.patch_status("ingresses", md.get("namespace"), md["name"], {
                    "loadBalancer": {"ingress": [{"ip": self.host}]}})
            except (ApiError, requests.RequestException) as exc:
                log.info("ingress status: %s", exc)
        if not self.informers["routes"].available:
            return
        for route in self.items("routes"):
            md = route["metadata"]
            if (route.get("status") or {}).get("ingress"):
                continue
            host = (route.get("spec") or {}).get("host") or ""
            try:
                self.client.patch_status("routes", md.get("namespace"), md["name"], {
                    "ingress": [{"host": host, "routerName": "default",
                                 "conditions": [{"type": "Admitted", "status": "True"}]}]})
            except (ApiError, requests.RequestException) as exc:
                log.info("route status: %s", exc)

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

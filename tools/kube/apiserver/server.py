"""HTTP/1.1 front end: routing, content negotiation, auth, streaming."""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import discovery, subresources, version
from .api import Api, Request, check_method
from .auth import Authenticator, User, allowed, verb_for
from .errors import ApiError, forbidden, method_not_allowed, no_resource, not_implemented
from .metrics import RequestMetrics, metric_verb
from .resources import lookup
from .storage import Store
from .table import to_table
from .watch import run_watch

log = logging.getLogger(__name__)
UNSUPPORTED_SUBRESOURCES = {"exec", "attach", "portforward", "proxy", "eviction", "binding",
                            "ephemeralcontainers", "resize", "token", "finalize", "rollback"}


class KubeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], state_dir: Path | None,
                 restricted: dict[str, tuple[str, str]] | None = None,
                 persist: bool = True, history: int = 5000, tls: bool = False,
                 disabled_groups: tuple[str, ...] = ()) -> None:
        super().__init__(addr, Handler)
        self.disabled_groups = frozenset(disabled_groups)  # API groups this cluster lacks
        self.metrics = RequestMetrics()
        self.state_dir = state_dir
        self.ca_cert: Path | None = None
        if tls:
            from .tls import make_certs, server_context

            ca, cert, key = make_certs((state_dir or Path(tempfile.mkdtemp())) / "tls",
                                       str(addr[0]))
            self.ca_cert = ca
            self.socket = server_context(cert, key).wrap_socket(self.socket, server_side=True)
        state_file = state_dir / "state.json" if state_dir and persist else None
        self.store = Store(state_file, history=history)
        self.api = Api(self.store)
        self.auth = Authenticator(dict(restricted or {}))
        self.stop_event = threading.Event()
        self._bootstrap()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a stopped watch, a killed kubectl) is routine: no traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionResetError | BrokenPipeError | ssl.SSLEOFError):
            log.debug("client %s hung up: %s", client_address, error)
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "https" if self.ca_cert else "http"
        return f"{scheme}://{host!s}:{port}"

    def _bootstrap(self) -> None:
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease", "ingress-nginx"):
            if self.store.get(("", "namespaces"), "", ns) is None:
                body = json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": ns}}).encode()
                res = lookup("", "v1", "namespaces")
                assert res is not None
                self.api.create(Request("POST", res, body=body, user_agent="bootstrap"))
        if self.store.get(("", "services"), "default", "kubernetes") is None:
            res = lookup("", "v1", "services")
            assert res is not None
            svc = {"apiVersion": "v1", "kind": "Service", "metadata": {
                "name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": "10.96.0.1", "ports": [
                    {"name": "https", "port": 443, "targetPort": 6443}]}}
            self.api.create(Request("POST", res, "default", body=json.dumps(svc).encode(),
                                    user_agent="bootstrap"))
        res = lookup("rbac.authorization.k8s.io", "v1", "clusterroles")
        assert res is not None
        for name, rules in (
                ("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
                ("view", [{"apiGroups": ["", "apps", "batch", "networking.k8s.io"],
                           "resources": ["*"], "verbs": ["get", "list", "watch"]}])):
            if self.store.get(res.key, "", name) is None:
                body = json.dumps({"apiVersion": "rbac.authorization.k8s.io/v1",
                                   "kind": "ClusterRole", "metadata": {"name": name},
                                   "rules": rules}).encode()
                self.api.create(Request("POST", res, body=body, user_agent="bootstrap"))

    def shutdown_all(self) -> None:
        self.stop_event.set()
        with self.store.cond:
            self.store.cond.notify_all()
        self.shutdown()
        self.server_close()
        self.store.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KubeServer
    server_version = "kube-standin"
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(None)
        super().setup()
        # headers and body are separate writes: without NODELAY, delayed ACKs cost 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, body: Any, ctype: str = "application/json",
              warnings: list[str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._code = code
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for w in warnings or []:
            # quoted-string as the apiserver writes it: \ and " escaped with a backslash
            quoted = w.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{quoted}"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, err: ApiError) -> None:
        self._send(err.code, err.status())

    def _start_stream(self, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> bool:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            return True
        except OSError:
            return False

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _closed(self) -> bool:
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            if isinstance(self.connection, ssl.SSLSocket):  # peek at the raw TCP stream
                raw = socket.socket(fileno=os.dup(self.connection.fileno()))
                try:
                    return raw.recv(1, socket.MSG_PEEK) == b""
                finally:
                    raw.close()
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # ------------------------------------------------------------------ verbs
    def do_OPTIONS(self) -> None:
        self._body()
        self._error(method_not_allowed())

    def _dispatch(self) -> None:
        started = time.monotonic()
        self._metric: tuple[str, ...] | None = None
        self._code = 0
        try:
            body = self._body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
            self._route(body)
        except ApiError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: answer 500 like the apiserver would
            log.exception("internal error on %s %s", self.command, self.path)
            self._error(ApiError(500, "InternalError",
                                 f"Internal error occurred: {type(exc).__name__}: {exc}",
                                 {"causes": [{"message": str(exc)}]}))
        finally:
            if self._metric is not None:
                self.server.metrics.count((*self._metric, str(self._code or 200)))
            log.debug("%s %s %.1fms", self.command, self.path,
                      (time.monotonic() - started) * 1000)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _route(self, body: bytes) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path).rstrip("/") or "/"
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        parts = [p for p in path.split("/") if p]
        srv = self.server
        if path in ("/healthz", "/readyz", "/livez"):
            self._send(200, b"ok", "text/plain; charset=utf-8")
            return
        if path == "/metrics":
            self._send(200, srv.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
            return
        if path == "/version":
            self._send(200, version.info())
            return
        if path == "/api":
            host, port = srv.server_address[:2]
            self._send(200, discovery.api_versions(f"{host!s}:{port}"))
            return
        if path == "/apis":
            groups = discovery.api_group_list()
            groups["groups"] = [g for g in groups["groups"]
                                if g["name"] not in srv.disabled_groups]
            self._send(200, groups)
            return
        if path == "/openapi/v3":
            self._send(200, discovery.openapi_v3_root())
            return
        if path.startswith("/openapi/v3/"):
            doc = discovery.openapi_v3_gv(path[len("/openapi/v3/"):])
            if doc is not None:
                self._send(200, doc)
                return
        if parts and parts[0] in ("api", "apis"):
            self._resource(parts, query, body)
            return
        self._error(no_resource())

    def _resource(self, parts: list[str], query: dict[str, str], body: bytes) -> None:
        if parts[0] == "api":
            group, rest = "", parts[1:]
        else:
            group, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
        if group in self.server.disabled_groups:  # e.g. no OpenShift Route API on vanilla
            raise no_resource()
        if not rest:
            doc = discovery.api_group(group) if group else None
            if doc is None:
                raise no_resource()
            self._send(200, doc)
            return
        version, rest = rest[0], rest[1:]
        if not rest:
            rl = discovery.resource_list(group, version)
            if rl is None:
                raise no_resource()
            self._send(200, rl)
            return
        watch = query.get("watch") in ("1", "true")
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and lookup(group, version, rest[2]):
            ns, rest = rest[1], rest[2:]
        res = lookup(group, version, rest[0]) if rest else None
        if res is None or len(rest) > 3:
            raise no_resource()
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub in UNSUPPORTED_SUBRESOURCES and sub not in res.subresources:
            raise not_implemented(f"the Kubernetes API stand-in does not implement "
                                  f"{res.plural}/{sub}")
        if sub and sub not in res.subresources:
            raise no_resource()
        if res.namespaced and not ns and name:
            raise no_resource()
        req = Request(self.command if self.command != "HEAD" else "GET", res, ns, name, sub,
                      query, body, self.headers.get("Content-Type") or "application/json",
                      self.headers.get("User-Agent") or "")
        user = srv_user(self)
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        verb = verb_for(req.method, name, watch)
        scope = "namespace" if ns else ("resource" if name else "cluster")
        self._metric = (metric_verb(req.method, name, watch, req.content_type), group, version,
                        res.plural, sub, scope)
        auth_res = f"{res.plural}/{sub}" if sub else res.plural
        if res.plural != "selfsubjectaccessreviews" and not allowed(
                self.server.store, user, verb, group, auth_res, ns, name):
            raise forbidden(res, res.plural, group, name, user.name, verb, ns, sub)
        check_method(res, verb)
        if sub and (req.method not in ("GET", "PUT", "PATCH") or watch or
                    (sub == "log" and req.method != "GET")):
            raise method_not_allowed()
        self._handle(req, user, watch)

    def _handle(self, req: Request, user: User, watch: bool) -> None:
        api = self.server.api
        accept = self.headers.get("Accept") or ""
        as_table = "as=Table" in accept
        m, res = req.method, req.res
        if res.plural == "selfsubjectaccessreviews":
            self._send(201, subresources.access_review(self.server.store, req, user))
            return
        if req.subresource == "log":
            subresources.pod_log(self, api, req)
            return
        if req.subresource == "scale":
            self._send(200, subresources.scale(api, req))
            return
        if m == "GET" and watch:
            wrap = None
            if as_table:
                def wrap(o: dict[str, Any]) -> dict[str, Any]:
                    return to_table(res, [o], o["metadata"].get("resourceVersion", ""),
                                    req.q("includeObject"))
            self._start_stream("application/json")
            run_watch(self.server.store, req,
                      lambda ev: self._chunk(json.dumps(ev).encode() + b"\n"),
                      self._closed, self.server.stop_event, wrap)
            self._end_stream()
            return
        if m == "GET" and req.name:
            obj = api.get(req)
            if as_table:
                obj = to_table(res, [obj], obj["metadata"]["resourceVersion"],
                               req.q("includeObject"))
            self._send(200, obj)
        elif m == "GET":
            lst = api.list(req)
            if as_table:
                table = to_table(res, lst["items"], lst["metadata"]["resourceVersion"],
                                 req.q("includeObject"))
                if "continue" in lst["metadata"]:
                    table["metadata"]["continue"] = lst["metadata"]["continue"]
                lst = table
            self._send(200, lst)
        elif m == "POST":
            if req.name:
                raise method_not_allowed()
            self._send(201, api.create(req), warnings=req.warnings)
        elif m == "PUT":
            if not req.name:
                raise method_not_allowed()
            existed = api.store.get(res.key, req.namespace, req.name) is not None
            obj = api.update(req)
            self._send(200 if existed else 201, obj, warnings=req.warnings)
        elif m == "PATCH":
            if not req.name:
                raise method_not_allowed()
            existed = api.store.get(res.key, req.namespace, req.name) is not None
            obj = api.patch(req)
            self._send(200 if existed else 201, obj, warnings=req.warnings)
        elif m == "DELETE":
            if req.name:
                code, obj = api.delete(req)
                self._send(code, obj)
            else:
                self._send(200, api.delete_collection(req))
        else:
            raise method_not_allowed()


def srv_user(h: Handler) -> User | None:
    return h.server.auth.user(h.headers.get("Authorization"))


__all__ = ["Handler", "KubeServer"]

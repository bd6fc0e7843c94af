"""Pure logic of the stand-in controllers (no servers, no containers)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tools.kube.controllers.client import label_selector_matches
from tools.kube.controllers.deployments import resolve_percent, template_hash
from tools.kube.controllers.endpoints import endpoints_for
from tools.kube.controllers.ingress import IngressController, Location, Server, prefix_regex
from tools.kube.controllers.kaniko import PathMap, base_images, check_push, parse_args
from tools.kube.controllers.node import is_kaniko, parse_cpu, parse_mem
from tools.kube.controllers.podspec import expand
from tools.kube.controllers.runtime import registry_host, write_authfile


def test_kaniko_flags() -> None:
    o = parse_args(["--context=dir:///workspace", "--dockerfile", "Dockerfile.x",
                    "--destination=r1/a:1", "-d", "r2/a:1", "--insecure",
                    "--insecure-registry", "r1", "--skip-tls-verify-registry=r2",
                    "--registry-certificate", "r3=/certs/ca.crt", "--cache=true",
                    "--build-arg", "A=1", "--cache-dir", "/cache", "--snapshot-mode=redo",
                    "--no-push=false", "--verbosity", "debug"])
    assert o.context == "dir:///workspace" and o.dockerfile == "Dockerfile.x"
    assert o.destinations == ["r1/a:1", "r2/a:1"]
    assert o.insecure and not o.skip_tls and not o.no_push
    assert o.insecure_registries == {"r1"} and o.skip_tls_registries == {"r2"}
    assert o.certificates == {"r3": "/certs/ca.crt"}
    assert o.build_args == ["A=1"]
    assert set(o.ignored) == {"cache", "cache-dir", "snapshot-mode", "verbosity"}


def test_kaniko_push_check_does_not_wait_for_the_upload_cancel() -> None:
    """go-containerregistry cancels the probe upload in a goroutine and ignores the answer.

    A fake registry, because a real one cannot be told to stall a DELETE: in CI, the
    harness registry once took over 30 s to answer it (an fsync on a busy disk), and the
    shim's build failed where Kaniko's would not have.
    """
    release = threading.Event()
    seen: list[str] = []

    class StallingRegistry(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append("POST " + self.path)
            self.send_response(202)
            self.send_header("Location", "/v2/m/blobs/uploads/u1?_state=s")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self) -> None:
            seen.append("DELETE " + self.path)
            release.wait(60)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), StallingRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        check_push(f"{host}/m:1", {}, verify=False, plain=True)  # returns: the stall is not waited
        assert seen[0] == "POST /v2/m/blobs/uploads/"
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen[1:] == ["DELETE /v2/m/blobs/uploads/u1?_state=s"], "the upload not cancelled"
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_kaniko_path_map_and_from_lines(tmp_path: Path) -> None:
    pm = PathMap({"/workspace": "/h/ws", "/kaniko/.docker": "/h/docker", "/": "/h/root"})
    assert pm.host("/workspace/Dockerfile") == "/h/ws/Dockerfile"
    assert pm.host("/workspace") == "/h/ws"
    assert pm.host("/kaniko/.docker/config.json") == "/h/docker/config.json"
    assert pm.host("/workspacex") == "/h/root/workspacex"
    scratch = PathMap({"/workspace": "/h/ws"}, str(tmp_path / "root"))
    assert scratch.mapped("/dev/termination-log") is None
    assert scratch.host("/dev/termination-log") == str(tmp_path / "root/dev/termination-log")
    df = tmp_path / "Dockerfile"
    df.write_text("FROM --platform=linux/amd64 reg:5000/base:1 AS b\nRUN x\nFROM scratch\n"
                  "FROM b\nfrom reg/other@sha256:abc\n")
    assert base_images(str(df)) == ["reg:5000/base:1", "b", "reg/other@sha256:abc"]


@pytest.mark.parametrize(("image", "expected"), [
    ("gcr.io/kaniko-project/executor:v1.23.2", True),
    ("gcr.io/kaniko-project/executor@sha256:0123", True),
    ("cgr.dev/chainguard/kaniko:latest", True),
    ("127.0.0.1:5000/mirror/kaniko-project/executor:debug", True),
    ("ghcr.io/osscontainertools/kaniko:v1.28.3", True),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/ghcr/osscontainertools/kaniko:v1.28.3", True),
    ("docker.io/martizih/kaniko:v1.28.3-debug", True),
    # look-alikes are pulled like any image (and fail when no registry has them)
    ("ghcr.io/chainguard-dev/kaniko/executor:v1.25.2", False),  # never published
    ("127.0.0.1:5000/evil/kaniko:latest", False),
    ("127.0.0.1:5000/tools/my-kaniko-builder:1", False),
    ("127.0.0.1:5000/kaniko-test/app:v1", False),
    ("127.0.0.1:5000/base/python:bookworm", False),
])
def test_is_kaniko(image: str, expected: bool) -> None:
    assert is_kaniko(image) is expected


def test_a_renamed_mirror_is_known_once_declared(monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = "registry.corp:5000/build/executor:v1.28.3"
    assert not is_kaniko(mirror)
    monkeypatch.setenv("KUBE_STANDIN_KANIKO_IMAGES", "other/x, registry.corp:5000/build/executor")
    assert is_kaniko(mirror)


def test_quantities_and_percentages() -> None:
    assert parse_cpu("250m") == 0.25 and parse_cpu("2") == 2 and parse_cpu(None) == 0
    assert parse_mem("1Gi") == 2**30 and parse_mem("500M") == 5e8 and parse_mem("1e3") == 1000
    assert resolve_percent("25%", 4, True) == 1 and resolve_percent("25%", 1, True) == 1
    assert resolve_percent("25%", 1, False) == 0 and resolve_percent(2, 10, False) == 2
    assert resolve_percent(None, 10, False) == 2


def test_template_hash_ignores_hash_label_and_server_fields() -> None:
    tpl = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}
    same = {"metadata": {"labels": {"app": "x", "pod-template-hash": "abc"},
                         "creationTimestamp": None},
            "spec": {"containers": [{"name": "c"}]}}
    other = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "d"}]}}
    assert template_hash(tpl) == template_hash(same) != template_hash(other)
    assert len(template_hash(tpl)) == 10


def test_selectors() -> None:
    assert label_selector_matches({"app": "a"}, {"app": "a", "x": "y"})
    assert not label_selector_matches({"app": "a"}, {"app": "b"})
    assert not label_selector_matches({}, {"app": "a"})
    sel = {"matchLabels": {"app": "a"},
           "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]},
                                {"key": "old", "operator": "DoesNotExist"}]}
    assert label_selector_matches(sel, {"app": "a", "tier": "web"})
    assert not label_selector_matches(sel, {"app": "a", "tier": "web", "old": "1"})


def test_env_expansion() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("x-$(A)-$(B)-$(C)", env) == "x-1-two-$(C)"
    assert expand("$$(A)", env) == "$(A)"


def test_registry_host_and_authfile(tmp_path: Path) -> None:
    assert registry_host("127.0.0.1:5000/a/b:1") == "127.0.0.1:5000"
    assert registry_host("python:3.11") == "docker.io"
    assert registry_host("localhost/x") == "localhost"
    path = write_authfile(str(tmp_path / "auth.json"), [
        {"auths": {"https://reg.example:5000/v2/": {"username": "u", "password": "p"}}},
        {"other:1": {"auth": "dTpw"}}])
    assert path is not None
    data = json.loads(Path(path).read_text())["auths"]
    assert data["reg.example:5000"]["auth"] == "dTpw" and data["other:1"]["auth"] == "dTpw"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert write_authfile(str(tmp_path / "none.json"), []) is None


def _pod(name: str, ready: bool, ip: str, ports: dict[str, int], labels: dict[str, str]
         ) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "uid": name, "labels": labels},
            "spec": {"nodeName": "harness-node", "containers": [{
                "name": "c", "image": "i",
                "ports": [{"name": n, "containerPort": p} for n, p in ports.items()]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def test_endpoints_are_pod_ips_and_resolved_target_ports() -> None:
    """Each pod at its own address; a named targetPort is the pod's containerPort of that
    name (pods without it are left out of that port), a number is taken as is."""
    svc = {"metadata": {"name": "s", "namespace": "ns"},
           "spec": {"selector": {"app": "a"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                              {"name": "metrics", "port": 9090, "targetPort": 9090}]}}
    pods = [_pod("p1", True, "10.1.2.3", {"http": 8080}, {"app": "a"}),
            _pod("p2", False, "10.1.2.4", {"web": 8000}, {"app": "a"}),
            _pod("p3", True, "10.1.2.5", {"http": 8080}, {"app": "b"})]
    subsets = endpoints_for(svc, pods)
    assert len(subsets) == 2
    assert subsets[0]["addresses"][0]["ip"] == "10.1.2.3"
    assert subsets[0]["addresses"][0]["targetRef"]["name"] == "p1"
    assert {p["name"]: p["port"] for p in subsets[0]["ports"]} == {"http": 8080, "metrics": 9090}
    assert subsets[1]["notReadyAddresses"][0]["ip"] == "10.1.2.4"
    assert {p["name"]: p["port"] for p in subsets[1]["ports"]} == {"metrics": 9090}


def test_prefix_regex() -> None:
    import re
    rx = re.compile(prefix_regex("/foo/bar/"))
    assert rx.match("/foo/bar") and rx.match("/foo/bar/x") and not rx.match("/foo/barx")
    assert prefix_regex("/") == "^/"


def test_rendered_nginx_conf_is_valid(tmp_path: Path) -> None:
    ctl = IngressController.__new__(IngressController)
    ctl.dir = str(tmp_path)
    ctl.host = "127.0.0.1"
    ctl.port = 18080
    os.makedirs(tmp_path / "logs")
    os.makedirs(tmp_path / "tmp")
    servers = {"": Server("", [
        Location("/exact", True, "u_a"),
        Location("^/p/dep-1(/|$)(.*)", False, "u_a", rewrite="/$2",
                 rewrite_regex="(?i)/p/dep-1(/|$)(.*)", case_insensitive=True),
        Location("^/none(/|$)", False, None)]),
        "h.example": Server("h.example", [Location("^/", False, "u_a", body_size="10m")])}
    conf = ctl.render(servers, {"u_a": ["127.0.0.1:31001"]})
    (tmp_path / "nginx.conf").write_text(conf)
    res = subprocess.run(["nginx", "-t", "-q", "-p", str(tmp_path), "-e",
                          str(tmp_path / "logs/error.log"), "-c", str(tmp_path / "nginx.conf")],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr + conf
    assert 'rewrite "(?i)/p/dep-1(/|$)(.*)" "/$2" break;' in conf
    assert "return 503;" in conf

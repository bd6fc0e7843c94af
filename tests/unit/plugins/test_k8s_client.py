"""KubeClient against a tiny local HTTP server (scripted answers, real HTTP, no client mocks)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.errors import ClusterError, PermissionDeniedError
from agent.plugins.kubernetes.client import KubeClient, NotFoundError, TokenBucket
from agent.plugins.kubernetes.settings import KubernetesSettings


@dataclass
class Script:
    answers: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    seen: list[dict[str, Any]] = field(default_factory=list)
    default: tuple[int, dict[str, str], Any] = (200, {}, {"kind": "Status"})


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            script.seen.append({
                "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(body) if body else None, "time": time.monotonic(),
            })
            status, headers, payload = script.answers.pop(0) if script.answers else script.default
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Script, Path]]:
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{httpd.server_port}"}}],
        "users": [{"name": "u", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
    }))
    yield script, kubeconfig
    httpd.shutdown()
    httpd.server_close()


def _client(kubeconfig: Path, **extra: Any) -> KubeClient:
    settings = KubernetesSettings(kubeconfig=kubeconfig, namespace="ns", **extra)
    return KubeClient(settings)


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "d", "namespace": "ns"}, "spec": {"replicas": 1}}


def test_apply_is_server_side_apply_with_field_manager(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers.append((200, {}, {**DEPLOYMENT, "metadata": {"name": "d", "generation": 1}}))
    live = _client(kubeconfig).apply(DEPLOYMENT)
    assert live["metadata"]["generation"] == 1
    request = script.seen[0]
    assert request["method"] == "PATCH"
    assert request["path"].startswith("/apis/apps/v1/namespaces/ns/deployments/d?")
    assert "fieldManager=management-agent" in request["path"]
    assert "force=true" in request["path"]
    assert request["headers"]["content-type"] == "application/apply-patch+yaml"
    assert request["headers"]["authorization"] == "Bearer secret-token"
    assert request["body"] == DEPLOYMENT


def test_core_paths_and_list_restores_kind(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers.append((200, {}, {"items": [{"metadata": {"name": "p"}}]}))
    pods = _client(kubeconfig).list("v1", "Pod", label_selector="a=b")
    assert pods == [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}]
    assert script.seen[0]["path"] == "/api/v1/namespaces/ns/pods?labelSelector=a%3Db&limit=500"


def test_list_follows_continue_tokens_page_by_page(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [
        (200, {}, {"metadata": {"continue": "tok-1", "remainingItemCount": 1},
                   "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}]}),
        (200, {}, {"metadata": {}, "items": [{"metadata": {"name": "c"}}]})]
    pods = _client(kubeconfig, list_page_size=2).list("v1", "Pod", label_selector="x=y")
    assert [p["metadata"]["name"] for p in pods] == ["a", "b", "c"]
    assert [s["path"] for s in script.seen] == [
        "/api/v1/namespaces/ns/pods?labelSelector=x%3Dy&limit=2",
        "/api/v1/namespaces/ns/pods?labelSelector=x%3Dy&limit=2&continue=tok-1"]


def test_list_starts_over_when_the_continue_token_expired(server: tuple[Script, Path]) -> None:
    """410 Expired (etcd compacted the first page's revision): a fresh list, no duplicates;
    when it keeps expiring, the error is raised."""
    script, kubeconfig = server
    first = (200, {}, {"metadata": {"continue": "old"}, "items": [{"metadata": {"name": "a"}}]})
    expired = (410, {}, {"kind": "Status", "code": 410, "reason": "Expired",
                         "message": "The provided continue parameter is too old"})
    script.answers += [first, expired, first,
                       (200, {}, {"metadata": {}, "items": [{"metadata": {"name": "b"}}]})]
    client = _client(kubeconfig, list_page_size=1)
    assert [p["metadata"]["name"] for p in client.list("v1", "Pod")] == ["a", "b"]
    assert [s["path"].endswith("continue=old") for s in script.seen] == [
        False, True, False, True]
    script.seen.clear()
    script.answers += [first, expired] * 3
    with pytest.raises(ClusterError, match="too old") as caught:
        client.list("v1", "Pod")
    assert caught.value.status == 410 and len(script.seen) == 6


def test_transient_errors_are_retried(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(503, {}, {"message": "busy"}), (500, {}, "oops"),
                       (200, {}, {"metadata": {"name": "d"}})]
    assert _client(kubeconfig).get("apps/v1", "Deployment", "d") == {"metadata": {"name": "d"}}
    assert len(script.seen) == 3


def test_retry_after_is_honoured(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(429, {"Retry-After": "1"}, {"message": "slow down"}),
                       (200, {}, {"metadata": {"name": "d"}})]
    _client(kubeconfig).get("apps/v1", "Deployment", "d")
    assert script.seen[1]["time"] - script.seen[0]["time"] >= 0.95


def test_retries_give_up_with_transient_cluster_error(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.default = (503, {}, {"message": "etcd down"})
    with pytest.raises(ClusterError) as info:
        _client(kubeconfig, api_retries=2).get("apps/v1", "Deployment", "d")
    assert info.value.transient
    assert "etcd down" in str(info.value)
    assert len(script.seen) == 3


def test_connection_errors_are_retried_then_mapped(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u"}}],
    }))
    with pytest.raises(ClusterError, match="cannot reach the Kubernetes API") as info:
        _client(kubeconfig, api_retries=1).list("v1", "Pod")
    assert info.value.transient


def test_forbidden_names_verb_resource_and_namespace(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.default = (403, {}, {"kind": "Status", "reason": "Forbidden",
                                "message": 'deployments.apps "d" is forbidden'})
    with pytest.raises(PermissionDeniedError) as info:
        _client(kubeconfig).apply(DEPLOYMENT)
    message = str(info.value)
    assert message.startswith(
        "forbidden: the agent's service account cannot patch deployments.apps in namespace ns: "
        "grant it in the chart's Role (rbac)")
    assert len(script.seen) == 1  # a 403 is not retried
    with pytest.raises(PermissionDeniedError, match="cannot list pods in namespace ns"):
        _client(kubeconfig).list("v1", "Pod")
    with pytest.raises(PermissionDeniedError, match="cannot get pods/log in namespace ns"):
        _client(kubeconfig).pod_logs("p")


def test_delete_tolerates_not_found_and_sends_propagation(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(404, {}, {"message": "not found"}), (200, {}, {"kind": "Status"})]
    client = _client(kubeconfig)
    assert client.delete("apps/v1", "Deployment", "gone") is False
    assert client.delete("apps/v1", "Deployment", "d", propagation="Foreground") is True
    assert script.seen[1]["method"] == "DELETE"
    assert script.seen[1]["body"]["propagationPolicy"] == "Foreground"


def test_get_missing_is_none_and_other_errors_map(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(404, {}, {"message": "nope"}), (422, {}, {"message": "spec.x: Invalid"}),
                       (401, {}, {"message": "Unauthorized"})]
    client = _client(kubeconfig)
    assert client.get("v1", "Service", "s") is None
    with pytest.raises(ClusterError, match=r"HTTP 422.*spec\.x: Invalid"):
        client.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}})
    with pytest.raises(ClusterError, match="unauthorized"):
        client.list("v1", "Service")
    with pytest.raises(NotFoundError):
        script.answers.append((404, {}, {"message": "no"}))
        client.read_secret("missing")


def test_create_exist_ok_returns_existing(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(409, {}, {"message": "already exists"}),
                       (200, {}, {"metadata": {"name": "j", "uid": "1"}})]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}}
    assert _client(kubeconfig).create(job, exist_ok=True)["metadata"]["uid"] == "1"
    assert [r["method"] for r in script.seen] == ["POST", "GET"]


def test_pod_logs_and_events(server: tuple[Script, Path]) -> None:
    script, kubeconfig = server
    script.answers += [(200, {}, "line1\nline2\n"), (200, {}, {"items": [
        {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "B", "lastTimestamp": "2"},
        {"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "A", "lastTimestamp": "1"},
        {"involvedObject": {"kind": "Pod", "name": "other"}, "reason": "X"},
    ]})]
    client = _client(kubeconfig)
    assert client.pod_logs("p", container="server", tail_lines=5) == "line1\nline2\n"
    assert "tailLines=5" in script.seen[0]["path"]
    assert [e["reason"] for e in client.events_for("Pod", "p")] == ["A", "B"]


def test_token_bucket_limits_rate() -> None:
    bucket = TokenBucket(qps=20, burst=2)
    start = time.monotonic()
    for _ in range(6):
        bucket.acquire()
    assert time.monotonic() - start >= 0.15  # 2 free, then 4 at 20/s


def test_kubeconfig_context_is_honoured(server: tuple[Script, Path], tmp_path: Path) -> None:
    script, kubeconfig = server
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "http://127.0.0.1:9"}})
    config["contexts"] = [
        {"name": "default-ctx", "context": {"cluster": "nowhere", "user": "u"}},
        {"name": "test", "context": {"cluster": "c", "user": "u"}},
    ]
    config["current-context"] = "default-ctx"
    path = tmp_path / "two-contexts"
    path.write_text(yaml.safe_dump(config))
    client = _client(path, context="test")
    assert client.host == kubeconfig_host(kubeconfig)
    client.list("v1", "Pod")
    assert len(script.seen) == 1


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load the kubeconfig"):
        _client(tmp_path / "nope", context="x")


def kubeconfig_host(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"])


def test_read_secret_scrubs_only_credential_fields(server: tuple[Script, Path]) -> None:
    """Doctor reads Secrets: a password is scrubbed from logs from then on, but a flag or a
    region is not (scrubbing 'true' would mangle every line)."""
    import base64

    from agent.logs import scrub

    script, kubeconfig = server
    data = {"password": "canary-k8s-secret-pw-01", "region": "eu-north-1",
            "insecure": "true", "endpoint": "http://minio.storage:9000"}
    script.answers.append((200, {}, {"kind": "Secret", "metadata": {"name": "s"}, "data": {
        k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}))
    assert _client(kubeconfig).read_secret("s") == data
    line = "password canary-k8s-secret-pw-01 region eu-north-1 insecure true http://minio.storage:9000"
    assert scrub(line) == "password *** region eu-north-1 insecure true http://minio.storage:9000"

"""The stand-in node's NetworkPolicy egress enforcement: the nft rules it derives, and what
they do to a connection from a real pod network namespace (root; no podman)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tools.harnesslib.netns import PodNetwork
from tools.kube.controllers.netpolicy import ruleset, write


@dataclass
class View:
    ns: str
    pod_ip: str
    labels: dict[str, str] = field(default_factory=dict)
    netns_path: str = "/run/netns/x"

    @property
    def pod(self) -> dict[str, Any]:
        return {"metadata": {"labels": self.labels}}


def policy(egress: list[dict[str, Any]] | None, ns: str = "models",
           selector: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector or {}, "policyTypes": ["Ingress", "Egress"]}
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"name": "p", "namespace": ns}, "spec": spec}


def accepts(script: str) -> list[str]:
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines if line.endswith("accept") and "lo" not in line
            and "established" not in line]


def test_no_egress_policy_means_no_rules() -> None:
    pod = View("models", "10.0.0.2", {"app": "a"})
    ingress_only = {"metadata": {"name": "i", "namespace": "models"},
                    "spec": {"podSelector": {}, "ingress": [{}]}}
    other_ns = policy([], ns="elsewhere")
    other_pod = policy([], selector={"matchLabels": {"app": "b"}})
    script = ruleset(pod, [ingress_only, other_ns, other_pod], [pod], {})
    assert "chain" not in script and "delete table inet k8s_netpol" in script


def test_rules_from_peers_and_ports() -> None:
    pod = View("models", "10.0.0.2", {"app": "a"})
    store = View("storage", "10.0.0.9", {"app": "minio"})
    same_ns = View("models", "10.0.0.7", {"role": "cache"})
    egress = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]}}],
         "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9010}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                       "storage"}},
                 "podSelector": {"matchLabels": {"app": "minio"}}}]},
        {"to": [{"podSelector": {"matchLabels": {"role": "cache"}}}],
         "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "SCTP"}]},
        {"to": [{"podSelector": {"matchLabels": {"role": "nobody"}}}]},
    ]
    namespaces = {"storage": {"kubernetes.io/metadata.name": "storage"}}
    assert accepts(ruleset(pod, [policy(egress)], [pod, store, same_ns], namespaces)) == [
        "udp dport 53 accept", "tcp dport 53 accept",
        "ip daddr 10.1.0.0/16 ip daddr != { 10.1.2.0/24 } tcp dport 9000-9010 accept",
        "ip daddr { 10.0.0.9 } accept",
        "ip daddr { 10.0.0.7 } meta l4proto sctp accept",  # the named port is not enforced
    ]


def test_empty_egress_denies_and_an_empty_rule_allows_everything() -> None:
    pod = View("models", "10.0.0.2")
    deny = ruleset(pod, [policy([])], [pod], {})
    assert accepts(deny) == [] and "reject" in deny
    assert accepts(ruleset(pod, [policy([]), policy([{}])], [pod], {})) == ["accept"]


@pytest.fixture
def pod_network(tmp_path: Path) -> Iterator[tuple[PodNetwork, str]]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    net = PodNetwork.for_key(str(tmp_path))
    net.ensure_bridge()
    try:
        yield net, net.add_pod(2)
    finally:
        net.remove()


def _serve(host: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _fetch(netns_path: str, url: str) -> subprocess.CompletedProcess[str]:
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read())"
    return subprocess.run(["ip", "netns", "exec", netns_path.rsplit("/", 1)[-1], "python3",
                           "-c", code], capture_output=True, text=True, timeout=30, check=False)


def test_a_pod_reaches_only_what_its_egress_rules_allow(
        pod_network: tuple[PodNetwork, str]) -> None:
    net, netns = pod_network
    allowed, other = _serve(net.gateway), _serve(net.gateway)
    try:
        urls = [f"http://{net.gateway}:{s.server_port}/" for s in (allowed, other)]
        assert all(_fetch(netns, url).returncode == 0 for url in urls)  # no policy: open
        pod = View("models", net.pod_ip(2), netns_path=netns)
        rule = {"to": [{"ipBlock": {"cidr": f"{net.gateway}/32"}}],
                "ports": [{"protocol": "TCP", "port": allowed.server_port}]}
        write(netns, ruleset(pod, [policy([rule])], [pod], {}))
        assert _fetch(netns, urls[0]).stdout.strip() == "b'ok'"
        blocked = _fetch(netns, urls[1])
        # rejected at once (admin-prohibited: EHOSTUNREACH), not left to time out
        assert blocked.returncode != 0 and "No route to host" in blocked.stderr, blocked.stderr
        write(netns, ruleset(pod, [], [pod], {}))  # the policy deleted: open again
        assert _fetch(netns, urls[1]).returncode == 0
    finally:
        allowed.shutdown()
        other.shutdown()

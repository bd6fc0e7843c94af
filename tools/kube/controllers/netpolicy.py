"""NetworkPolicy egress, enforced with nftables inside each pod's network namespace.

What a policy-enforcing CNI (Calico, Cilium) does for egress: a pod selected by
a policy of type Egress may open connections only to what one of those policies'
egress rules allows (`to` peers x `ports`; an empty list matches everything;
`egress: []` allows nothing); a pod no Egress policy selects is unrestricted.
Replies to connections the pod accepted (probes, the ingress) always pass.
Peers: `ipBlock` (with `except`), `podSelector` / `namespaceSelector` resolved to
the addresses of the pods running on this node (all pods of the stand-in).
Blocked packets are rejected (icmp admin-prohibited), so a blocked connect
fails at once instead of after a timeout (a real CNI usually drops: same
outcome, slower). Ingress rules are not enforced (docs/kube-standin.md).

The rules live in the pod's namespace, so they go with it. They are written
before the pod's first container starts and rewritten when policies, pods or
namespace labels change (`sync`, from the node's loop).
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from .client import Informer, KubeClient, Obj, label_selector_matches

log = logging.getLogger(__name__)

TABLE = "k8s_netpol"


class PodView(Protocol):
    """What the enforcer needs of a running pod (the node's PodWorker)."""

    pod: Obj
    ns: str
    pod_ip: str
    netns_path: str


def _selects(selector: Obj | None, labels: dict[str, str] | None) -> bool:
    """A label selector where `{}` selects everything (NetworkPolicy semantics)."""
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        return selector is not None
    return label_selector_matches(selector, labels)


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def egress_policies(policies: Iterable[Obj], namespace: str, labels: dict[str, str]) -> list[Obj]:
    """The policies of type Egress that select a pod."""
    chosen = []
    for policy in policies:
        spec = policy.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec
                                             else ["Ingress"])
        if (policy.get("metadata") or {}).get("namespace") == namespace and "Egress" in types \
                and _selects(spec.get("podSelector", {}), labels):
            chosen.append(policy)
    return chosen


def _peer_matches(peer: Obj, policy_ns: str, pods: Iterable[PodView],
                  namespaces: dict[str, dict[str, str]]) -> list[str]:
    """nft match expressions of one `to` peer (none: the peer matches no address)."""
    block = peer.get("ipBlock")
    if block:
        family = "ip6" if ipaddress.ip_network(block["cidr"], strict=False).version == 6 \
            else "ip"
        match = f"{family} daddr {block['cidr']}"
        excepted = block.get("except") or []
        return [match + (f" {family} daddr != {{ {', '.join(excepted)} }}" if excepted else "")]
    ns_selector = peer.get("namespaceSelector")
    addresses = sorted({
        p.pod_ip for p in pods if p.pod_ip
        and (_selects(ns_selector, namespaces.get(p.ns, {"kubernetes.io/metadata.name": p.ns}))
             if ns_selector is not None else p.ns == policy_ns)
        and _selects(peer.get("podSelector", {}), _labels(p.pod))})
    return [f"ip daddr {{ {', '.join(addresses)} }}"] if addresses else []


def _port_matches(ports: list[Obj] | None) -> list[str]:
    if not ports:
        return [""]
    matches = []
    for port in ports:
        proto = str(port.get("protocol") or "TCP").lower()
        number, end = port.get("port"), port.get("endPort")
        if number is None:
            matches.append(f"meta l4proto {proto}")
        elif isinstance(number, int) or str(number).isdigit():
            matches.append(f"{proto} dport {number}" + (f"-{end}" if end else ""))
        else:
            log.info("named port %r in a NetworkPolicy egress rule: not enforced", number)
    return matches


def ruleset(view: PodView, policies: Iterable[Obj], pods: Iterable[PodView],
            namespaces: dict[str, dict[str, str]]) -> str:
    """The nft script for one pod: an empty table when no Egress policy selects it."""
    reset = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    selecting = egress_policies(policies, view.ns, _labels(view.pod))
    if not selecting:
        return reset
    pods = list(pods)
    accepts: list[str] = []
    for policy in selecting:
        policy_ns = policy["metadata"]["namespace"]
        for rule in (policy.get("spec") or {}).get("egress") or []:
            peers = rule.get("to")
            destinations = [m for peer in peers for m in _peer_matches(
                peer, policy_ns, pods, namespaces)] if peers else [""]
            for destination in destinations:
                for port in _port_matches(rule.get("ports")):
                    line = " ".join(part for part in (destination, port, "accept") if part)
                    if line not in accepts:
                        accepts.append(line)
    body = "\n    ".join(['oifname "lo" accept', "ct state established,related accept",
                          *accepts, "reject with icmpx type admin-prohibited"])
    return (reset + f"table inet {TABLE} {{\n  chain egress {{\n"
            f"    type filter hook output priority 0; policy accept;\n    {body}\n  }}\n}}\n")


def write(netns_path: str, script: str) -> None:
    """Run an nft script inside a pod's network namespace; RuntimeError when nft refuses."""
    netns = netns_path.rsplit("/", 1)[-1]
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=script,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nft in {netns}: {done.stderr.strip()}")


class EgressEnforcer:
    """Keeps every running pod's nft egress rules in line with the NetworkPolicies."""

    def __init__(self, client: KubeClient, stop: threading.Event, wake: threading.Event) -> None:
        def changed(kind: str, obj: Obj) -> None:
            wake.set()

        self.policies = Informer(client, "networkpolicies", stop, on_change=changed, resync=20)
        self.namespaces = Informer(client, "namespaces", stop, on_change=changed, resync=20)
        self.applied: dict[str, str] = {}  # netns path -> script last written
        self.lock = threading.Lock()

    def start(self) -> None:
        for informer in (self.policies, self.namespaces):
            threading.Thread(target=informer.run, name=f"node-{informer.resource}-informer",
                             daemon=True).start()
        for informer in (self.policies, self.namespaces):
            informer.synced.wait(30)

    def apply(self, view: PodView, pods: Iterable[PodView]) -> None:
        """Write `view`'s rules if they changed; raises RuntimeError when nft refuses."""
        namespaces = {ns["metadata"]["name"]: _labels(ns) for ns in self.namespaces.items()}
        script = ruleset(view, self.policies.items(), pods, namespaces)
        with self.lock:
            if self.applied.get(view.netns_path) == script:
                return
            write(view.netns_path, script)
            self.applied[view.netns_path] = script

    def forget(self, netns_path: str) -> None:
        with self.lock:
            self.applied.pop(netns_path, None)

    def sync(self, pods: Sequence[PodView]) -> None:
        """Rewrite what changed for every pod with a sandbox; forget pods that are gone."""
        live = [p for p in pods if p.netns_path]
        for view in live:
            try:
                self.apply(view, live)
            except RuntimeError as exc:
                log.warning("NetworkPolicy of %s/%s not applied: %s", view.ns,
                            (view.pod.get("metadata") or {}).get("name"), exc)
        with self.lock:
            for path in set(self.applied) - {p.netns_path for p in live}:
                del self.applied[path]

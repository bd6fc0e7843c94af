"""The harness's own network: one bridge per harness instance, one network namespace per pod.

Why: pods on a real cluster each have an address of their own, so two replicas of
a server on port 8080 both run, and a server bound to 127.0.0.1 is unreachable
from its Service. The harness gives every pod that (see docs/kube-standin.md):

* a bridge ``hkb<id>`` on the host with the **harness address** ``<subnet>.1``;
  the harness servers listen on it, so the host and the pods reach them at the
  same address;
* per pod a namespace ``hkn<id>-<n>`` with ``eth0`` = ``<subnet>.<n>`` and the peer
  ``hkv<id><n>`` on the bridge. No default route, only one to the harness pool
  (10.128.0.0/10) via the harness address: a pod reaches its harness and the
  other pods (and a stand-in started by a test reaches the harness's servers);
  anything else fails at once with "Network is unreachable" instead of hanging
  (the machine's DNS server included, so a reverse lookup such as http.server's
  ``getfqdn`` does not stall startup).

``<id>`` comes from a hash of the harness root, the /24 subnet from the same hash
(stepping past any range this machine already uses), so several harnesses on
one machine never collide. IP forwarding stays off and no NAT or firewall rule
is added: traffic never leaves the machine.
Standard library only (``ip`` from iproute2), like the rest of the harness.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

# the private range every harness takes its /24 from (Service IPs, 10.96.0.0/16, lie outside)
_POOL = ipaddress.IPv4Network("10.128.0.0/10")


class NetError(RuntimeError):
    """An `ip` command failed; the message carries its stderr."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def instance_id(key: str) -> str:
    """Six hex digits naming this harness's interfaces and namespaces."""
    return hashlib.sha256(key.encode()).hexdigest()[:6]


def used_networks(skip_device: str = "") -> list[ipaddress.IPv4Network]:
    """IPv4 networks on this machine's interfaces and routes (except ``skip_device``'s)."""
    nets: list[ipaddress.IPv4Network] = []
    for entry in json.loads(_ip("-j", "-4", "addr").stdout or "[]"):
        if entry.get("ifname") == skip_device:
            continue
        for a in entry.get("addr_info") or []:
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(_ip("-j", "-4", "route").stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("dev") != skip_device:
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def choose_subnet(key: str, skip_device: str = "") -> ipaddress.IPv4Network:
    """A /24 of the pool derived from ``key`` that overlaps nothing on this machine."""
    subnets = 2 ** (24 - _POOL.prefixlen)
    start = int(hashlib.sha256(key.encode()).hexdigest()[6:14], 16) % subnets
    taken = used_networks(skip_device)
    for step in range(subnets):
        base = int(_POOL.network_address) + ((start + step) % subnets) * 256
        candidate = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(base)}/24")
        if not any(candidate.overlaps(n) for n in taken):
            return candidate
    raise NetError(f"no free /24 left in {_POOL}")


@dataclass(frozen=True)
class PodNetwork:
    """One harness instance's bridge and the pods' namespaces on it."""

    id: str
    subnet: str  # "10.x.y.0/24"

    @property
    def bridge(self) -> str:
        return f"hkb{self.id}"

    @property
    def gateway(self) -> str:
        """The harness address: on the bridge, reachable from the host and every pod."""
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def pod_ip(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + index)

    def netns(self, index: int) -> str:
        return f"hkn{self.id}-{index}"

    def veth(self, index: int) -> str:
        return f"hkv{self.id}{index}"

    @classmethod
    def from_env(cls, value: str) -> PodNetwork:
        """Parse ``KUBE_STANDIN_POD_NETWORK`` (``<id>/<subnet>``, as :meth:`env` writes)."""
        ident, _, subnet = value.partition("/")
        return cls(ident, subnet)

    def env(self) -> str:
        return f"{self.id}/{self.subnet}"

    @classmethod
    def for_key(cls, key: str) -> PodNetwork:
        """The network of the instance named by ``key`` (a path), subnet chosen now."""
        ident = instance_id(key)
        return cls(ident, str(choose_subnet(key, skip_device=f"hkb{ident}")))

    # -- bridge ------------------------------------------------------------------------
    def exists(self) -> bool:
        return Path(f"/sys/class/net/{self.bridge}").exists()

    def ensure_bridge(self) -> None:
        """Create the bridge with the harness address (idempotent)."""
        if not self.exists():
            _ip("link", "add", self.bridge, "type", "bridge")
        addrs = _ip("-j", "-4", "addr", "show", "dev", self.bridge).stdout
        if self.gateway not in addrs:
            _ip("addr", "add", f"{self.gateway}/{self.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def remove(self) -> list[str]:
        """Delete every namespace, veth and the bridge of this instance; return what went."""
        gone = [ns for ns in self.namespaces() if self._del_netns(ns)]
        for link in self.links():
            if _ip("link", "del", link, check=False).returncode == 0:
                gone.append(link)
        return gone

    def namespaces(self) -> list[str]:
        out = _ip("netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(f"hkn{self.id}-")]

    def links(self) -> list[str]:
        """Host interfaces of this instance (veths first, the bridge last)."""
        names = [p.name for p in Path("/sys/class/net").iterdir()]
        veths = sorted(n for n in names if n.startswith(f"hkv{self.id}"))
        return veths + ([self.bridge] if self.bridge in names else [])

    # -- pods --------------------------------------------------------------------------
    def add_pod(self, index: int) -> str:
        """Namespace + veth for pod ``index`` (2..254); returns the netns path for podman."""
        ns, veth = self.netns(index), self.veth(index)
        self.del_pod(index)  # a leftover of an earlier run
        _ip("netns", "add", ns)
        try:
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.pod_ip(index)}/{self.prefixlen}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", str(_POOL), "via", self.gateway)
        except NetError:
            self.del_pod(index)
            raise
        return f"/run/netns/{ns}"

    def del_pod(self, index: int) -> None:
        """Remove pod ``index``'s namespace (its veth pair goes with it)."""
        self._del_netns(self.netns(index))
        _ip("link", "del", self.veth(index), check=False)

    @staticmethod
    def _del_netns(ns: str) -> bool:
        return _ip("netns", "del", ns, check=False).returncode == 0


def leftovers(net: PodNetwork) -> list[str]:
    """What of ``net`` still exists (namespaces, interfaces, firewall rules naming it)."""
    found = net.namespaces() + net.links()
    try:
        rules = subprocess.run(["iptables-save"], capture_output=True, text=True,
                               check=False).stdout
    except OSError:
        rules = ""
    found += [line for line in rules.splitlines()
              if net.bridge in line or f"hkv{net.id}" in line or net.subnet in line]
    return found

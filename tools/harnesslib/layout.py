"""Where the harness keeps its state (.harness/) and the small JSON state file."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .netns import PodNetwork

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    """Paths under .harness/ (override with HARNESS_DIR)."""

    dir: Path

    @classmethod
    def default(cls) -> Layout:
        return cls(Path(os.environ.get("HARNESS_DIR") or ROOT / ".harness").resolve())

    def sub(self, *parts: str) -> Path:
        path = self.dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def logs(self) -> Path:
        return self.sub("logs")

    @property
    def pids(self) -> Path:
        return self.sub("pids")

    @property
    def bin(self) -> Path:
        return self.sub("bin")

    @property
    def cache(self) -> Path:
        return self.sub("cache")

    @property
    def tls(self) -> Path:
        return self.sub("tls")

    @property
    def venv(self) -> Path:
        return self.dir / "venv"

    def data(self, name: str) -> Path:
        return self.sub("data", name)

    def conf(self, name: str) -> Path:
        return self.sub("conf", name)

    def venv_bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    @property
    def env_file(self) -> Path:
        return self.dir / "env"

    def network(self) -> PodNetwork:
        """This harness's bridge and pod subnet: chosen on first use, then kept."""
        path = self.dir / "network.json"
        if path.exists():
            return PodNetwork(**json.loads(path.read_text()))
        net = PodNetwork.for_key(str(self.dir))
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"id": net.id, "subnet": net.subnet}))
        return net

    @property
    def host(self) -> str:
        """The harness address every server listens on (host and pods reach it)."""
        return self.network().gateway


class State:
    """Ports and generated secrets, kept across `up` runs in state.json."""

    def __init__(self, layout: Layout, host: str | None = None) -> None:
        self.path = layout.dir / "state.json"
        self.host = host or layout.host  # where ports are taken: the harness address
        self.data: dict[str, dict[str, str]] = {"ports": {}, "secrets": {}}
        if self.path.exists():
            self.data.update(json.loads(self.path.read_text()))

    def port(self, key: str) -> int:
        """The port recorded for `key`, allocating a free one the first time."""
        from .procs import free_port

        ports = self.data["ports"]
        if key not in ports:
            ports[key] = str(free_port(self.host))
        return int(ports[key])

    def reserve(self, key: str) -> int:
        """Before (re)starting: keep the recorded port if still free, else take a new one."""
        from .procs import free_port, port_free

        ports = self.data["ports"]
        if key not in ports or not port_free(int(ports[key]), self.host):
            ports[key] = str(free_port(self.host))
        return int(ports[key])

    def secret(self, key: str) -> str:
        values = self.data["secrets"]
        if key not in values:
            values[key] = secrets.token_urlsafe(18)
        return values[key]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True))
        tmp.chmod(0o600)
        tmp.replace(self.path)

"""What every harness server provides; the context they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .layout import ROOT, Layout, State
from .procs import Proc, run


@dataclass
class Context:
    layout: Layout
    state: State

    @property
    def ca(self) -> Path:
        return self.layout.tls / "ca.crt"


class Server:
    """A background server. Subclasses fill in the hooks; `up` drives them."""

    name = ""
    timeout = 30.0  # seconds to become ready

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.layout = ctx.layout
        self.state = ctx.state
        self.proc = Proc(ctx.layout, self.name)

    @property
    def port(self) -> int:
        return self.state.port(self.name)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def host(self) -> str:
        """The harness address (on the harness bridge): the host and pods reach it."""
        return self.state.host

    def available(self) -> str | None:
        """None when the server can run here, else why not (it is skipped)."""
        return None

    def prepare(self) -> None:
        """Choose ports and write config files (only called before a (re)start)."""
        self.state.reserve(self.name)

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def after_start(self) -> None:
        """One-off setup once ready after a (re)start (buckets, checks)."""

    def venv_task(self, *args: str) -> None:
        """Run tools/harnesslib/venvtasks.py with the servers' venv (it has boto3)."""
        run([str(self.layout.venv_bin("python")), "-m", "tools.harnesslib.venvtasks", *args],
            cwd=str(ROOT))

    def exports(self) -> dict[str, str]:
        """Variables for .harness/env while the server runs."""
        return {}

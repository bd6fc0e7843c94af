"""The harness's process handling (no servers needed): start, stop by process group."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tools.harnesslib.layout import Layout, State
from tools.harnesslib.procs import Proc, free_port, group_alive, port_free
from tools.harnesslib.tokenserver import parse_scope


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    proc = Proc(Layout(tmp_path), "sleeper")
    pid = proc.start(["sh", "-c", "sleep 300 & sleep 300"])
    time.sleep(0.3)
    assert proc.alive()
    assert proc.stop(timeout=5)
    time.sleep(0.2)
    assert not proc.alive()
    assert not proc.pidfile.exists()
    assert not group_alive(pid)  # the backgrounded `sleep` went too (zombies aside)


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    proc = Proc(Layout(tmp_path), "ghost")
    proc.pidfile.write_text(f"{os.getpid()} 1\n")  # our PID, another start time
    assert proc.pid() is None
    assert not proc.stop()


def test_state_keeps_ports_and_secrets(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    state = State(layout, host="127.0.0.1")
    port, secret = state.port("x"), state.secret("pw")
    state.save()
    again = State(layout, host="127.0.0.1")
    assert (again.port("x"), again.secret("pw")) == (port, secret)
    assert port_free(free_port("127.0.0.1"), "127.0.0.1")


def test_token_scope_parsing() -> None:
    assert parse_scope("repository:team/app:pull,push") == {
        "type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    assert parse_scope("registry:catalog:*") == {"type": "registry", "name": "catalog",
                                                 "actions": ["*"]}
    assert parse_scope("garbage") is None

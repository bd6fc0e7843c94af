"""Background processes: start with a pid file, check, stop by PID (process group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .layout import Layout


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(port: int, host: str) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT ok
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _start_time(pid: int) -> str | None:
    """Kernel start time of a process (guards against PID reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


class Proc:
    """One named background server: pids/<name>.pid holds "PID STARTTIME"."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.name = name
        self.pidfile = layout.pids / f"{name}.pid"
        self.log = layout.logs / f"{name}.log"

    def pid(self) -> int | None:
        """The PID if the recorded process is still the one we started."""
        try:
            pid_text, started = self.pidfile.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _start_time(pid) == started else None

    def alive(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> int:
        self.stop()
        if self.log.exists() and self.log.stat().st_size > 10 * 1024 * 1024:
            self.log.replace(self.log.with_suffix(".log.1"))  # keep one old log
        full_env = {**os.environ, **(env or {})}
        with self.log.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} start: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(  # new session: the PID is also the process group
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=full_env, cwd=cwd, start_new_session=True)
        started = _start_time(proc.pid) or "0"
        self.pidfile.write_text(f"{proc.pid} {started}\n")
        return proc.pid

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM the process group we started, SIGKILL after `timeout`."""
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and group_alive(pid):
            time.sleep(0.1)
        if group_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return True

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of our own children count as gone
    return _start_time(pgid) is not None or _has_members(pgid)


def _has_members(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    return True
    return False


def stragglers(state_dir: Path) -> list[tuple[int, str]]:
    """Processes (not us) whose command line names our data/ or conf/ dirs: children a
    server started in a session of their own (nginx, conmon) and failed to stop."""
    found = []
    needles = (f"{state_dir}/data/", f"{state_dir}/conf/")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), os.getppid()):
            continue
        with contextlib.suppress(OSError):
            raw = (entry / "cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
            if any(needle in cmdline for needle in needles):
                found.append((int(entry.name), cmdline.strip()))
    return found


def terminate(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM one process by PID, SIGKILL if it is still there after `timeout`."""
    started = _start_time(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _start_time(pid) == started and started:
        time.sleep(0.1)
    if started and _start_time(pid) == started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def http_answers(url: str, cafile: Path | None = None, timeout: float = 2.0) -> bool:
    """True when `url` gives any HTTP answer (401/404 count: the server is up)."""
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited; log {proc.log}:\n{proc.tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready after {timeout:.0f}s; "
                       f"log {proc.log}:\n{proc.tail()}")


def run(argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output on failure."""
    result = subprocess.run(list(argv), text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result

"""PostgreSQL (Debian's `postgresql` package) for the control plane's database tests.

Its own cluster under .harness/data/postgres, owned by the `postgres` user the
package creates, listening on the harness address only (and a socket in that directory), so the host
and pods reach it at the same address (`samenet` in pg_hba.conf: the harness bridge),
password authentication (scram-sha-256) for the `postgres` role. Nothing is
installed or started as a system service: `postgres` runs in the foreground
under `runuser`, as a harness process like the others.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .base import Server
from .procs import run

USER = "postgres"


def bindir() -> Path | None:
    """The newest installed server's bin directory (bookworm: /usr/lib/postgresql/15/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def _chown(path: Path, user: pwd.struct_passwd) -> None:
    os.chown(path, user.pw_uid, user.pw_gid)


class Postgres(Server):
    name = "postgres"
    timeout = 60.0

    @property
    def password(self) -> str:
        return self.state.secret("postgres-password")

    def available(self) -> str | None:
        if bindir() is None:
            return "postgresql is not installed"
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return f"no {USER} user (the postgresql package creates it)"
        if os.geteuid() != 0:
            return "needs root to run the server as the postgres user"
        return None

    @property
    def data(self) -> Path:
        return self.layout.data("postgres") / "cluster"

    @property
    def socket_dir(self) -> Path:
        return self.layout.data("postgres") / "run"

    def prepare(self) -> None:
        super().prepare()
        user = pwd.getpwnam(USER)
        base = self.layout.data("postgres")
        base.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        _chown(self.socket_dir, user)
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            self.data.mkdir(mode=0o700)
            _chown(self.data, user)
            pwfile = base / "pwfile"
            pwfile.unlink(missing_ok=True)  # created 0600 before the password is written
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password + "\n")
            _chown(pwfile, user)
            try:
                run(["runuser", "-u", USER, "--", str(bindir() / "initdb"), "-D", str(self.data),
                     "-U", USER, "--pwfile", str(pwfile), "--auth=scram-sha-256",
                     "--encoding=UTF8", "--locale=C.UTF-8"])
            finally:
                pwfile.unlink(missing_ok=True)
            # initdb trusts only 127.0.0.1; the harness address and the pods are on the bridge
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet scram-sha-256\n")

    def command(self) -> tuple[list[str], dict[str, str]]:
        postgres = bindir() / "postgres"  # type: ignore[operator]
        return ["runuser", "-u", USER, "--", str(postgres), "-D", str(self.data),
                "-h", self.host, "-p", str(self.port), "-k", str(self.socket_dir),
                "-c", "max_connections=200", "-c", "fsync=off",
                "-c", "listen_addresses=" + self.host], {}

    def ready(self) -> bool:
        tool = bindir()
        if tool is None:
            return False
        result = subprocess.run([str(tool / "pg_isready"), "-q", "-h", self.host, "-p",
                                 str(self.port)], capture_output=True)
        return result.returncode == 0

    def exports(self) -> dict[str, str]:
        return {"HARNESS_POSTGRES_URL":
                f"postgresql://{USER}:{self.password}@{self.hostport}/postgres"}

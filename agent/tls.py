"""One trust store for every client: the system roots plus the configured private CAs.

requests, botocore and google-auth take one CA *file* that replaces their default
roots; setting a private CA for MinIO, a registry or the control plane must not
make public https endpoints fail. So the configured PEM (`tls.ca_bundle`, or a
client's own `*.ca_bundle`) is appended to the default roots (certifi's and the
system's bundle, or REQUESTS_CA_BUNDLE / SSL_CERT_FILE when set) into one file,
written once per content in a private directory and reused.

`verify=` is passed per request: REQUESTS_CA_BUNDLE in the environment would
otherwise override `Session.verify` (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
from pathlib import Path

from agent.errors import AgentError, ConfigError

SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/cert.pem")
_lock = threading.Lock()
_written: dict[str, str] = {}


def default_roots() -> list[Path]:
    """The bundles a client trusts without configuration (environment first)."""
    chosen = [os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE")]
    found = [Path(p) for p in chosen if p and os.path.isfile(p)]
    if found:
        return found[:1]
    import certifi

    roots = [Path(certifi.where())]
    roots += [Path(p) for p in SYSTEM_BUNDLES if os.path.isfile(p)][:1]
    return roots


def merged_bundle(extra: Path, directory: Path | None = None, *, setting: str = "tls.ca_bundle",
                  error: type[AgentError] = ConfigError) -> str:
    """A PEM file holding the default roots followed by `extra`; its path.

    `setting` names the configuration value in errors (raised as `error`)."""
    try:
        added = extra.read_bytes()
    except OSError as exc:
        raise error(f"{setting} {extra} is not readable ({exc.strerror})") from exc
    if b"-----BEGIN CERTIFICATE-----" not in added:
        raise error(f"{setting} {extra} holds no PEM certificate")
    pem = b"\n".join(p.read_bytes().rstrip(b"\n") for p in default_roots()) + b"\n" + added
    key = hashlib.sha256(pem).hexdigest()[:16]
    with _lock:
        cached = _written.get(key)
        if cached and os.path.isfile(cached):
            return cached
        path = _private_dir(directory) / f"ca-{key}.pem"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(pem)
            tmp.replace(path)
        _written[key] = str(path)
        return str(path)


def _private_dir(directory: Path | None) -> Path:
    """A directory only this user can write (reused across runs; else a fresh one)."""
    base = directory if directory is not None and directory.is_dir() else Path(
        tempfile.gettempdir())
    where = base / f"management-agent-ca-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        where.mkdir(mode=0o700)
    info = where.lstat()
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return where
    return Path(tempfile.mkdtemp(prefix="management-agent-ca-", dir=base))


def verify_for(extra: Path | None, setting: str, directory: Path | None = None,
               error: type[AgentError] = ConfigError) -> bool | str:
    """`verify=` for requests: True (the default roots) or the default roots plus `extra`."""
    if extra is None:
        return True
    return merged_bundle(extra, directory, setting=setting, error=error)

"""A throw-away CA, server and token-signing certificates, htpasswd files (openssl, htpasswd)."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

from .layout import Layout
from .procs import run

_SERVER_EXT = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,{pod_ips}
"""
_SIGNER_EXT = """basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
"""


def ensure_certs(layout: Layout) -> Path:
    """Create ca.crt, server.{crt,key}, token-signer.{crt,key} once; return the tls dir."""
    tls = layout.tls
    ca_key, ca_crt = tls / "ca.key", tls / "ca.crt"
    if not ca_crt.exists():
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "3650",
             "-subj", "/CN=management-agent harness CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    # the servers listen on the harness address: it must be in the SANs (re-issued if not)
    # and every pod address of this harness's /24, so a test server in a pod (the control
    # plane chart with TLS) can present it too: a cluster would use a Service name instead
    subnet = ipaddress.ip_network(f"{layout.host}/24", strict=False)
    sans = ",".join(f"IP:{ip}" for ip in subnet.hosts())
    _issue(tls, "server", f"/CN={layout.host}", _SERVER_EXT.format(pod_ips=sans))
    _issue(tls, "token-signer", "/CN=harness token signer", _SIGNER_EXT)
    certs_d = tls / "certs.d"  # skopeo --cert-dir wants a directory holding only ca.crt
    certs_d.mkdir(exist_ok=True)
    shutil.copyfile(ca_crt, certs_d / "ca.crt")
    return tls


def _issue(tls: Path, name: str, subject: str, extensions: str) -> None:
    crt, key, csr, ext = (tls / f"{name}.{s}" for s in ("crt", "key", "csr", "ext"))
    if crt.exists() and ext.exists() and ext.read_text() == extensions:
        return
    ext.write_text(extensions)
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", str(key),
         "-out", str(csr), "-subj", subject])
    run(["openssl", "x509", "-req", "-sha256", "-in", str(csr), "-CA", str(tls / "ca.crt"),
         "-CAkey", str(tls / "ca.key"), "-CAcreateserial", "-days", "825",
         "-extfile", str(ext), "-out", str(crt)])
    csr.unlink()


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    """bcrypt entries, as distribution requires (`htpasswd -Bbn`)."""
    lines = [run(["htpasswd", "-Bbn", user, password]).stdout.strip()
             for user, password in users.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)

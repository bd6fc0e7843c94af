"""Shared helpers of the image integration tests (imported by conftest and the tests)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Registries:
    plain: str
    tls: str
    tls_user: str
    tls_password: str
    ca_cert: Path
    token: str | None = None
    token_user: str | None = None
    token_password: str | None = None
    moto: str | None = None
    ecr: str | None = None  # a registry accepting moto's ECR login (AWS / <account>-auth-token)
    logs: dict[str, Path] = field(default_factory=dict)


def skopeo_tls_args(reg: Registries, host: str, prefix: str, certs: Path) -> list[str]:
    """skopeo flags for `host`: plain → no TLS verify; TLS → cert dir holding only ca.crt."""
    flag = f"--{prefix}-" if prefix else "--"
    if host == reg.plain:
        return [f"{flag}tls-verify=false"]
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(reg.ca_cert, certs / "ca.crt")
    return [f"{flag}cert-dir={certs}"]

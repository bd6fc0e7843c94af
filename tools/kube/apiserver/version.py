"""The Kubernetes version the stand-in reports (`/version`) and whose feature gates it applies.

`--server-version` (or `KUBE_STANDIN_VERSION`) sets it at start; a file
`server-version` in the state directory, read on every use, overrides it, so
a test can play a cluster upgrade (or an older cluster) without a restart.
Only what differs between versions for the agent is modelled: image volumes
(`volumes[].image`, feature gate ImageVolume: alpha 1.31, beta off by default
1.33, on by default 1.35, GA 1.36).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT = "1.33.0"
IMAGE_VOLUME_MINOR = 35  # ImageVolume on by default from here
OVERRIDE_FILE = "server-version"

_configured = os.environ.get("KUBE_STANDIN_VERSION", DEFAULT)
_state_dir: Path | None = None


def configure(version: str | None, state_dir: Path | None) -> None:
    """Set the start-time version (None keeps the environment's or the default)."""
    global _configured, _state_dir
    if version:
        _configured = version
    _state_dir = state_dir


def current() -> str:
    """`major.minor.patch` as reported now."""
    if _state_dir is not None:
        try:
            text = (_state_dir / OVERRIDE_FILE).read_text().strip()
        except OSError:
            text = ""
        if text:
            return text.lstrip("v")
    return _configured.lstrip("v")


def minor() -> int:
    return int(current().split(".")[1])


def info() -> dict[str, Any]:
    """The `/version` document of a kube-apiserver of `current()`."""
    major, minor_, *_ = current().split(".")
    return {
        "major": major, "minor": minor_, "emulationMajor": major, "emulationMinor": minor_,
        "minCompatibilityMajor": major, "minCompatibilityMinor": str(int(minor_) - 1),
        "gitVersion": f"v{current()}", "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean", "buildDate": "2025-04-23T13:01:20Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64",
    }


def image_volumes_enabled() -> bool:
    """ImageVolume on by default? (An older server drops `volumes[].image`.)"""
    return minor() >= IMAGE_VOLUME_MINOR

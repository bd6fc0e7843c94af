"""Checking a deployment from outside: GET its health path through the public URL.

The ingress controller needs a moment to pick up new endpoints, so a check
may retry for a while (`plugin.kubernetes.public_probe_timeout_seconds`).
"""

from __future__ import annotations

import time

import requests

from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.tls import verify_for


def probe_url(url: str, settings: KubernetesSettings, wait: float | None = None
              ) -> tuple[bool, str]:
    """(answered below 400, detail), retrying for up to `wait` seconds (default: the setting)."""
    verify = verify_for(settings.public_probe_ca_bundle,
                        "plugin.kubernetes.public_probe_ca_bundle")  # adds to the system roots
    deadline = time.monotonic() + (settings.public_probe_timeout_seconds
                                   if wait is None else wait)
    while True:
        try:
            response = requests.get(url, timeout=5, verify=verify)
            if response.status_code < 400:
                return True, "ok"
            detail = f"GET {url}: HTTP {response.status_code}"
        except requests.RequestException as exc:
            detail = f"GET {url}: {exc}"
        if time.monotonic() >= deadline:
            return False, detail
        time.sleep(min(1.0, settings.poll_interval_seconds))

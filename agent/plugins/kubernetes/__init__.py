"""The Kubernetes plugin: prediction servers as Deployment, Service and Ingress.

Imported lazily so that reading settings does not load the Kubernetes client.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "KubernetesPlugin":
        from agent.plugins.kubernetes.plugin import KubernetesPlugin

        return KubernetesPlugin
    raise AttributeError(name)

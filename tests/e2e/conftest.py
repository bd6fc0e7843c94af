"""Fixtures of the end-to-end tests: a fresh namespace on the harness cluster."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.settings import KubernetesSettings
from tests.e2e.test_e2e_kubernetes import harness_env


@pytest.fixture
def cluster() -> Iterator[dict[str, str]]:
    env = harness_env()
    needed = ("HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL", "HARNESS_BASE_IMAGE",
              "HARNESS_REGISTRY")
    missing = [k for k in needed if k not in env]
    if missing:
        pytest.skip(f"harness cluster not running ({', '.join(missing)} missing): "
                    "run tools/harness up")
    namespace = f"e2e-k8s-{secrets.token_hex(3)}"
    admin = KubeClient(KubernetesSettings(kubeconfig=Path(env["HARNESS_KUBECONFIG"]),
                                          namespace=namespace))
    # what the agent deploys must pass Pod Security "restricted", as on a hardened cluster
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        yield {**env, "NAMESPACE": namespace}
    finally:
        admin.delete("v1", "Namespace", namespace)
        admin.close()

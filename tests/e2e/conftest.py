"""Fixtures of the end-to-end tests: a fresh namespace on the harness cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import harness_namespace

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture
def cluster() -> Iterator[dict[str, str]]:
    env = require(harness_vars(), "HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL",
                  "HARNESS_BASE_IMAGE", "HARNESS_REGISTRY")
    # what the agent deploys must pass Pod Security "restricted", as on a hardened cluster
    with harness_namespace(env, "e2e-k8s", RESTRICTED) as cluster_env:
        yield cluster_env

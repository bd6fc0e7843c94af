"""Fixtures shared by the stand-in's cluster tests (API server + controllers + podman node).

`env` is the harness's variables (pods run HARNESS_BASE_IMAGE), `cluster` one stand-in
cluster per test module (it must leave no container behind), `ns` a fresh namespace per test.
Without the harness these tests fail under CI=true and are skipped otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import running_cluster
from tools.kube.controllers.testing import StandinCluster


@pytest.fixture(scope="session")
def env() -> dict[str, str]:
    return require(harness_vars(), "HARNESS_BASE_IMAGE")


@pytest.fixture(scope="module")
def cluster(env: dict[str, str]) -> Iterator[StandinCluster]:
    yield from running_cluster(env)


@pytest.fixture()
def ns(cluster: StandinCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)

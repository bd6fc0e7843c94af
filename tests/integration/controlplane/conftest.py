"""The control-plane tests of this folder run on both backends: SQLite and PostgreSQL.

`database_url` is parametrised: a fresh SQLite file, or a fresh database on
the harness's PostgreSQL server (`tools/harness up` starts it; created per
test and dropped after; without it the PostgreSQL variants skip, or fail under
CI=true). The `control_plane` and `shared_control_plane` fixtures of
tests/fixtures/controlplane.py are overridden here to run on it, so every test
in this folder runs once per backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.controlplane import ControlPlaneServer, database, marker_options, running

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file path or a postgresql:// URL."""
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def control_plane(database_url: str, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[ControlPlaneServer]:
    """A started reference control plane on a fresh database of each backend."""
    server = ControlPlaneServer(tmp_path_factory.mktemp("control-plane"),
                                database_url=database_url, **marker_options(request))
    with running(server, request):
        yield server


@pytest.fixture(scope="session", params=BACKENDS)
def _control_plane_process(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory,
                           ) -> Iterator[ControlPlaneServer]:
    workdir = tmp_path_factory.mktemp(f"shared-control-plane-{request.param}")
    with database(request.param, workdir) as url:
        server = ControlPlaneServer(workdir, database_url=url, test_endpoints=True)
        try:
            server.start()
            yield server
        finally:
            server.close()

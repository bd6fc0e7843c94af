"""The control-plane tests of this folder run on both backends: SQLite and PostgreSQL.

`database_url` is parametrised: a fresh SQLite file, or a fresh database on
the harness's PostgreSQL server (`tools/harness up` starts it; created per
test and dropped after). The `control_plane` and `shared_control_plane`
fixtures of tests/fixtures/controlplane.py are overridden here to run on it,
so every test in this folder runs once per backend.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.controlplane import ControlPlaneServer, _failed, _print_log

BACKENDS = ["sqlite", "postgresql"]


def _postgres_server(harness_env: dict[str, str]) -> str:
    url = harness_env.get("HARNESS_POSTGRES_URL")
    if not url:
        pytest.fail("HARNESS_POSTGRES_URL not in .harness/env: run tools/harness up "
                    "(it installs and starts PostgreSQL)", pytrace=False)
    return url


def fresh_database(server_url: str) -> str:
    """CREATE DATABASE on the harness server; returns its URL."""
    import psycopg

    name = f"cp_{secrets.token_hex(6)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    import psycopg

    server_url, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database(backend: str, workdir: Path, harness_env: dict[str, str] | None) -> str:
    if backend == "sqlite":
        return str(workdir / "control-plane.db")
    assert harness_env is not None
    return fresh_database(_postgres_server(harness_env))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file path or a postgresql:// URL."""
    env = request.getfixturevalue("harness_env") if request.param == "postgresql" else None
    url = _database(request.param, tmp_path, env)
    try:
        yield url
    finally:
        if request.param == "postgresql":
            drop_database(url)


@pytest.fixture
def control_plane(database_url: str, tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[ControlPlaneServer]:
    """A started reference control plane on a fresh database of each backend."""
    server = ControlPlaneServer(tmp_path_factory.mktemp("control-plane"),
                                database_url=database_url)
    try:
        server.start()
        yield server
    finally:
        server.close()
        if _failed(request):
            _print_log(server)


@pytest.fixture(scope="session", params=BACKENDS)
def _control_plane_process(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory,
                           ) -> Iterator[ControlPlaneServer]:
    workdir = tmp_path_factory.mktemp(f"shared-control-plane-{request.param}")
    env = request.getfixturevalue("harness_env") if request.param == "postgresql" else None
    url = _database(request.param, workdir, env)
    server = ControlPlaneServer(workdir, database_url=url)
    try:
        server.start()
        yield server
    finally:
        server.close()
        if request.param == "postgresql":
            drop_database(url)

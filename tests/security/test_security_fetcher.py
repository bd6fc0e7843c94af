"""Ops' egress and archive limits apply in the pod too, not only in the agent.

The storage initializer and the Kaniko fetch step run `management-agent fetch-model`
with the environment `fetcher_env` renders from the agent's settings. These tests run
that command with exactly that environment against a real HTTP server on 127.0.0.1
(conftest.py): before the fix, blocked_networks, allowed_networks and max_archive_ratio
were not forwarded and the pod fell back to the defaults.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from agent.artifacts.settings import DEFAULT_BLOCKED_NETWORKS, ArtifactSettings
from agent.images.fetcher import fetcher_env
from tests.security.conftest import Endpoint


def _fetch(url: str, dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MGMT_AGENT_")}
    return subprocess.run([sys.executable, "-m", "agent.cli", "fetch-model", url, str(dest),
                           "--set", "artifacts.retries=0"], capture_output=True, text=True,
                          timeout=120, env={**clean, **env})


def test_blocked_and_allowed_networks_reach_the_pod(endpoint: Callable[[], Endpoint],
                                                    tmp_path: Path) -> None:
    store = endpoint()
    blocked = ArtifactSettings(blocked_networks=[*DEFAULT_BLOCKED_NETWORKS, "127.0.0.0/8"])
    proc = _fetch(f"{store.url}/model.bin", tmp_path / "a", fetcher_env(blocked))
    assert proc.returncode == 1 and "artifacts.blocked_networks" in proc.stderr
    assert store.seen == []  # refused before connecting
    excepted = blocked.model_copy(update={"allowed_networks": ["127.0.0.1/32"]})
    proc = _fetch(f"{store.url}/model.bin", tmp_path / "b", fetcher_env(excepted))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "model.bin").read_bytes() == store.body


def test_archive_ratio_reaches_the_pod(endpoint: Callable[[], Endpoint], tmp_path: Path) -> None:
    """65 MiB of zeros in a ~65 KB tar.gz: a ratio of ~1000, over the default limit (100)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = 65 * 1024**2
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    store = endpoint()
    store.body = gzip.compress(raw.getvalue(), compresslevel=9)
    url = f"{store.url}/model.tar.gz"
    proc = _fetch(url, tmp_path / "a", fetcher_env(ArtifactSettings()))
    assert proc.returncode == 1 and "max_archive_ratio" in proc.stderr
    trusted = ArtifactSettings(max_archive_ratio=5000)  # ops trust this store's sparse weights
    proc = _fetch(url, tmp_path / "b", fetcher_env(trusted))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "weights.bin").stat().st_size == 65 * 1024**2

"""The node's podman runroot stays under podman's 50-character limit at any checkout path."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tools.kube.controllers.runtime import Podman, short_path


def test_short_paths_are_kept_and_long_ones_linked(tmp_path: Path) -> None:
    assert short_path("/tmp/x/runroot") == "/tmp/x/runroot"
    deep = tmp_path / ("d" * 60) / "runroot"
    deep.mkdir(parents=True)
    link = short_path(str(deep))
    assert len(link) <= 50 and os.path.realpath(link) == str(deep)
    assert short_path(str(deep)) == link  # stable across node restarts
    os.unlink(link)


def test_podman_accepts_the_runroot_of_a_long_state_dir(tmp_path: Path) -> None:
    podman = Podman(str(tmp_path / ("state-" * 12)))
    try:
        res = subprocess.run(podman.argv("ps", "-a"), capture_output=True, text=True,
                             timeout=120, check=False)
    except FileNotFoundError:
        pytest.skip("podman is not installed (tools/harness up installs it)")
    finally:
        if podman.runroot != os.path.join(podman.base, "runroot"):
            os.unlink(podman.runroot)
    assert res.returncode == 0, res.stderr

"""The node's image GC on a real podman store (no cluster): what it removes, and how.

The end-to-end case (a pod's image volume collected after the pod is gone) is in
test_controllers_image_volumes.py; this one pins down the choices a cluster test
cannot time: the minimum age, tags, and containers that are not running.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from tools.kube.controllers.image_gc import GCPolicy, ImageGC
from tools.kube.controllers.runtime import Podman


def _import(podman: Podman, tmp: Path, *names: str) -> None:
    layer = tmp / f"{names[0].replace('/', '_').replace(':', '_')}.tar"
    payload = tmp / "payload"
    payload.write_text(names[0])
    with tarfile.open(layer, "w") as tar:
        tar.add(payload, arcname="payload")
    res = podman.run("import", "--quiet", str(layer), names[0])
    assert res.returncode == 0, res.stderr
    for extra in names[1:]:
        assert podman.run("tag", names[0], extra).returncode == 0


def test_gc_spares_young_and_used_images_and_removes_an_old_one_with_all_its_tags(
        env: dict[str, str], tmp_path: Path) -> None:
    """`env`: podman comes with the harness (fails under CI=true without it)."""
    podman = Podman(str(tmp_path / "node"))
    try:
        _import(podman, tmp_path, "localhost/unused:1", "localhost/unused:2")
        _import(podman, tmp_path, "localhost/stopped:1", "localhost/stopped:2")
        _import(podman, tmp_path, "localhost/pending:1")
        now = [1000.0]
        events: list[tuple[str, str]] = []
        # always over the threshold and never back under it: every unused image is fair game
        gc = ImageGC(podman, GCPolicy(high=0, low=0, min_age=60),
                     lambda reason, message: events.append((reason, message)),
                     pod_images=lambda: {"localhost/pending:1", "localhost/not-pulled:1"},
                     clock=lambda: now[0])

        assert gc.collect() == 0, "an image first seen now is younger than the minimum age"
        assert podman.image_exists("localhost/unused:1")
        assert events and events[-1][0] == "FreeDiskSpaceFailed"
        assert "Attempted to free" in events[-1][1]

        # a container that never ran still holds its image, as for the kubelet
        assert podman.run("create", "--name", "held", "localhost/stopped:1", "true"
                          ).returncode == 0
        now[0] += 61
        gc.collect()
        assert not podman.image_exists("localhost/unused:1")
        assert not podman.image_exists("localhost/unused:2"), "a second tag kept the image"
        # in use: not even untagged (podman drops all names but one before it refuses)
        assert podman.image_exists("localhost/stopped:1")
        assert podman.image_exists("localhost/stopped:2")
        assert podman.image_exists("localhost/pending:1"), "a pod's image was collected"
    finally:
        podman.run("rm", "--force", "--all")
        podman.run("rmi", "--all", "--force")
        if not podman.runroot.startswith(str(tmp_path)):
            shutil.rmtree(podman.runroot, ignore_errors=True)

"""The kubelet's image garbage collection, on the node's podman storage.

Like the kubelet's image GC manager: every `period` (kubelet: 5 min), when the
filesystem that holds the images is `high` % full or more
(imageGCHighThresholdPercent, 85), images that no container uses and no pod mounts
as an image volume are removed, least recently used first, until usage is back to
`low` % (imageGCLowThresholdPercent, 80). In use: the images of every container in
the store and every mounted image, and those that the pods bound to the node name as
container images or image volumes, finished pods included until they are deleted (a
kubelet keeps a pod's exited containers, and so their images, that long). An image
first seen less than `min_age` ago (imageMinimumGCAge, 2 min) stays. When the unused
images cannot free enough, the Node gets the kubelet's `FreeDiskSpaceFailed` warning,
in the words of the Kubernetes version the stand-in reports.

Without it the node's storage only grew: a cached model image stayed forever, which
a real node does not promise, and a 1 GB benchmark filled the disk.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .runtime import Podman, env_float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GCPolicy:
    high: float = 85.0
    low: float = 80.0
    min_age: float = 120.0
    period: float = 300.0

    @classmethod
    def from_env(cls) -> GCPolicy:
        """KUBE_STANDIN_IMAGE_GC_{HIGH,LOW}_PERCENT, _MIN_AGE_SECONDS, _PERIOD_SECONDS."""
        return cls(high=env_float("KUBE_STANDIN_IMAGE_GC_HIGH_PERCENT", cls.high),
                   low=env_float("KUBE_STANDIN_IMAGE_GC_LOW_PERCENT", cls.low),
                   min_age=env_float("KUBE_STANDIN_IMAGE_GC_MIN_AGE_SECONDS", cls.min_age),
                   period=env_float("KUBE_STANDIN_IMAGE_GC_PERIOD_SECONDS", cls.period))


@dataclass
class _Seen:
    first_detected: float
    last_used: float = 0.0


class ImageGC:
    """One collection per `collect()`; the node calls it every `policy.period`."""

    def __init__(self, podman: Podman, policy: GCPolicy,
                 node_event: Callable[[str, str], None],
                 pod_images: Callable[[], set[str]] = set,
                 server_minor: Callable[[], int] = lambda: 33,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.podman = podman
        self.policy = policy
        self.node_event = node_event
        self.pod_images = pod_images
        self.server_minor = server_minor
        self.clock = clock
        self.seen: dict[str, _Seen] = {}

    def disk(self) -> tuple[int, int]:
        """Capacity and available bytes of the filesystem holding the images."""
        st = os.statvfs(os.path.join(self.podman.base, "root"))
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    def images(self) -> list[dict[str, Any]]:
        res = self.podman.run("images", "--all", "--format", "json", timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"podman images: {res.stderr.strip()}")
        # one entry per tag: one per image here
        return list({i["Id"]: i for i in json.loads(res.stdout or "[]")}.values())

    def in_use(self) -> set[str]:
        """Ids of the images containers, mounts and the node's pods use."""
        used: set[str] = set()
        # --no-trunc: ps shortens image ids to 12 characters otherwise
        res = self.podman.run("ps", "--all", "--no-trunc", "--format", "{{.ImageID}}",
                              timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"podman ps: {res.stderr.strip()}")
        used.update(line.strip() for line in res.stdout.splitlines() if line.strip())
        res = self.podman.run("image", "mount", "--format", "json", timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"podman image mount: {res.stderr.strip()}")
        used.update(str(m.get("id") or "") for m in json.loads(res.stdout or "[]"))
        for reference in self.pod_images():
            res = self.podman.run("image", "inspect", "--format", "{{.Id}}", reference,
                                  timeout=30)
            if res.returncode == 0:  # else not pulled (yet): nothing to keep
                used.add(res.stdout.strip())
        used.discard("")
        return used

    def collect(self) -> int:
        """Bytes freed (0 below the high threshold)."""
        now = self.clock()
        images = self.images()
        used = self.in_use()
        for image in images:
            seen = self.seen.setdefault(image["Id"], _Seen(first_detected=now))
            if image["Id"] in used:
                seen.last_used = now
        self.seen = {i["Id"]: self.seen[i["Id"]] for i in images}
        capacity, available = self.disk()
        usage = 100 - available * 100 // capacity
        if usage < self.policy.high:
            return 0
        to_free = int(capacity * (100 - self.policy.low) / 100) - available
        log.info("image filesystem %d%% used (high threshold %g%%): freeing %d bytes",
                 usage, self.policy.high, to_free)
        candidates = sorted(
            (i for i in images if i["Id"] not in used
             and now - self.seen[i["Id"]].first_detected >= self.policy.min_age),
            key=lambda i: (self.seen[i["Id"]].last_used, self.seen[i["Id"]].first_detected))
        freed = 0
        for image in candidates:
            if freed >= to_free:
                break
            # by its names, as the CRI removes all of them (podman refuses an id with two);
            # no --force, which would remove the containers a new pod made meanwhile
            res = self.podman.run("rmi", *(image.get("Names") or [image["Id"]]), timeout=120)
            if res.returncode == 0:
                freed += int(image.get("Size") or 0)
                self.seen.pop(image["Id"], None)
                log.info("image GC removed %s (%s)", image["Id"][:12],
                         ", ".join(image.get("Names") or []) or "no name")
            else:
                log.warning("image GC could not remove %s: %s", image["Id"][:12],
                            res.stderr.strip())
        if freed < to_free:
            self.node_event("FreeDiskSpaceFailed",
                            self._not_enough(usage, capacity, to_free, freed))
        return freed

    def _not_enough(self, usage: int, capacity: int, to_free: int, freed: int) -> str:
        if self.server_minor() >= 35:  # kubernetes#132578
            return ("Insufficient free disk space on the node's image filesystem "
                    f"({usage}% of {capacity / 2**30:.1f} GiB used). Failed to free sufficient "
                    f"space by deleting unused images (freed {freed} bytes). Investigate disk "
                    "usage, as it could be used by active images, logs, volumes, or other data.")
        return ("Failed to garbage collect required amount of images. Attempted to free "
                f"{to_free} bytes, but only found {freed} bytes eligible to free.")

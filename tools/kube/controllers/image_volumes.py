"""The kubelet's image volumes (`volumes[].image`): pull like a container image, mount read-only.

The image is pulled with the pod's imagePullSecrets (the pod's authfile),
honouring `pullPolicy` (default: Always for `:latest` or no tag, else
IfNotPresent), and its file system is mounted with `podman image mount`
(the overlay of its layers, as containerd and CRI-O present it) and bound
read-only into the containers that mount the volume. The mount is released
with the pod (`podman image unmount`; podman counts mounts per image).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .runtime import Podman


class ImageVolumeError(Exception):
    """An image volume could not be pulled or mounted (the pod stays ContainerCreating).

    `reason` and `message` are the kubelet image manager's event for it: `Failed`
    "Failed to pull image ..." or `ErrImageNeverPull`; the kubelet creates no
    container, so only these events on the pod tell why.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _policy(source: dict[str, Any]) -> str:
    ref = str(source.get("reference") or "")
    default = ("Always" if ref.endswith(":latest") or (
        ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref) else "IfNotPresent")
    return str(source.get("pullPolicy") or default)


def mount_image_volumes(podman: Podman, pod: dict[str, Any], authfile: str | None,
                        cancel: threading.Event,
                        event: Callable[[str, str], None] = lambda reason, msg: None,
                        ) -> dict[str, str]:
    """Volume name -> host directory of every image volume of `pod` (pulled and mounted).

    A pull is announced with the kubelet's `Pulling` / `Pulled` events (the pod
    is their object), as for a container image.
    """
    out: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        source = vol.get("image")
        if not isinstance(source, dict):
            continue
        ref = str(source.get("reference") or "")
        policy = _policy(source)
        with podman.image_lock(ref):
            present = podman.image_exists(ref)
            if policy == "Never" and not present:
                raise ImageVolumeError("ErrImageNeverPull", f'Container image "{ref}" is not '
                                       "present with pull policy of Never")
            if policy == "Always" or not present:
                event("Pulling", f'Pulling image "{ref}"')
                started = time.monotonic()
                ok, msg = podman.pull(ref, authfile, cancel=cancel)
                if not ok:
                    raise ImageVolumeError("Failed", f'Failed to pull image "{ref}": {msg}')
                event("Pulled", f'Successfully pulled image "{ref}" in '
                                f"{time.monotonic() - started:.3f}s")
            res = podman.run("image", "mount", ref, timeout=60)
        if res.returncode != 0 or not res.stdout.strip():
            raise ImageVolumeError("Failed", f'Error: mounting image "{ref}" failed: '
                               f"{res.stderr.strip()}")
        out[vol["name"]] = res.stdout.strip().splitlines()[-1]
    return out


def unmount_image_volumes(podman: Podman, pod: dict[str, Any], mounted: dict[str, str]) -> None:
    """Release the mounts `mount_image_volumes` made for `pod`."""
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if vol.get("name") in mounted and isinstance(vol.get("image"), dict):
            podman.run("image", "unmount", str(vol["image"].get("reference") or ""), timeout=60)

"""image-volume mode: the model-only image mounted read-only at the profile's model path.

A Kubernetes image volume (`volumes[].image`, beta and on by default since
1.35, GA in 1.36) pulls the image like a container image, with the pod's
imagePullSecrets, and mounts its file system read-only (`readOnly` is
implied; set here so a reader sees it). The reference is the content-addressed
`mv-<hash>` tag of `agent.images.modelpack`, immutable by construction, so
`IfNotPresent` reuses the node's copy and a replace pulls only the new model.
Pod Security admits image volumes at every level, `restricted` included.
"""

from __future__ import annotations

from typing import Any

from agent.errors import InvalidActionError

PULL_POLICY = "IfNotPresent"


def image_volume(name: str, reference: str | None, mount_path: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(init containers, volumes, server mounts) of image-volume mode."""
    if not reference:
        raise InvalidActionError("image-volume mode needs the model's image reference "
                                 "(agent.images.resolve_image pushes it first)")
    volume = {"name": name, "image": {"reference": reference, "pullPolicy": PULL_POLICY}}
    return [], [volume], [{"name": name, "mountPath": mount_path, "readOnly": True}]

"""image-volume mode: the model-only image mounted read-only at the profile's model path.

A Kubernetes image volume (`volumes[].image`, beta and on by default since
1.35, GA in 1.36) pulls the image like a container image, with the pod's
imagePullSecrets, and mounts its file system read-only (`readOnly` is
implied; set here so a reader sees it). The volume names the pushed manifest
by digest (`repo@sha256:...`), never by its `mv-<hash>` tag: a tag can be
moved by anyone allowed to push to the repository, a digest cannot, so the
pod mounts exactly the model that was pushed. `IfNotPresent` then reuses the
node's copy and a replace pulls only the new model. The reference the agent
records and reports (`repo:mv-<hash>@sha256:...`) keeps the tag for humans and
for telling an image-volume deploy apart at rollback; the tag is dropped here
because CRI-O and containers/image refuse or mishandle tag+digest references.
Pod Security admits image volumes at every level, `restricted` included.
"""

from __future__ import annotations

from typing import Any

from agent.errors import InvalidActionError
from agent.images.naming import ImageRef, parse_reference

PULL_POLICY = "IfNotPresent"


def pinned(reference: str) -> str:
    """`repo@sha256:...` of a `repo:tag@sha256:...` reference (unchanged without a digest:
    the last-good record of a deploy made before references were pinned)."""
    ref = parse_reference(reference)
    if ref.digest is None:
        return reference
    return str(ImageRef(ref.registry, ref.repository, None, ref.digest))


def image_volume(name: str, reference: str | None, mount_path: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(init containers, volumes, server mounts) of image-volume mode."""
    if not reference:
        raise InvalidActionError("image-volume mode needs the model's image reference "
                                 "(agent.images.resolve_image pushes it first)")
    volume = {"name": name, "image": {"reference": pinned(reference), "pullPolicy": PULL_POLICY}}
    return [], [volume], [{"name": name, "mountPath": mount_path, "readOnly": True}]

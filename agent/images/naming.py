"""Image references and content-addressed names of generated images.

A generated image's tag is derived from what goes into it: the model's content
digest, the base image's manifest digest and the build recipe version. The
same inputs always give the same tag, so "is it built already?" is one HEAD
request, and a rebuild after a crash or a repeated action is skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from agent.errors import BuildError

DOCKER_HUB = "registry-1.docker.io"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_REPO_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")

#: Bumped when the layer layout or config recipe of the builders changes.
BUILDER_RECIPE = "direct-1"


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference: registry host, repository and a tag and/or digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageRef:
    """Parse `host[:port]/repo[:tag][@digest]`; Docker Hub short names are expanded."""
    original = text
    text = text.strip()
    for scheme in ("docker://", "oci://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise BuildError(f"invalid digest in image reference {original!r}")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, text
    if registry in ("docker.io", "index.docker.io"):
        registry = DOCKER_HUB
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
        if not _TAG.match(tag):
            raise BuildError(f"invalid tag {tag!r} in image reference {original!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_REPO_COMPONENT.match(part) for part in path.split("/")):
        raise BuildError(
            f"invalid repository in image reference {original!r}: use lower-case letters, "
            "digits and separators"
        )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, path, tag, digest)


def content_tag(model_digest: str, base_digest: str, recipe: str) -> str:
    """`m-` + the first 20 hex digits of sha256(model_digest|base_digest|recipe)."""
    material = f"{model_digest}|{base_digest}|{recipe}".encode()
    return "m-" + hashlib.sha256(material).hexdigest()[:20]


def _component(value: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return cleaned[:60] or "model"


def target_repository(
    generated_image_repository: str | None, layout: str, deployment_id: str, model_id: str
) -> ImageRef:
    """The repository that receives the image of a deployment's model (no tag yet)."""
    if not generated_image_repository:
        raise BuildError(
            "no target repository for generated images: set images.generated_image_repository "
            "(e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/models)"
        )
    ref = parse_reference(generated_image_repository)
    repository = ref.repository
    if layout == "per-model":
        repository = f"{repository}/{_component(model_id)}"
    elif layout == "per-deployment":
        repository = f"{repository}/{_component(deployment_id)}"
    return ImageRef(ref.registry, repository)

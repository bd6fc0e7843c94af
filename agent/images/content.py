"""The content address of a model image and the one registry check before any build.

A generated image's tag is derived from what goes into it (model digest, base
image digest, the builder's recipe), so "is it built already?" is one HEAD
request. `address` does that check for every builder: it reaches the target
registry (and the base image's registry, when it differs), resolves the base
image, names the tag, asks whether it exists, and creates the repository when
the registry needs that (ECR). Builders only build.

A builder that pushes with an identity of its own (Kaniko in the cluster)
may build although the agent itself cannot use the registry (`tolerant`):
the tag is then derived from the base *reference*, and nothing is reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.errors import RegistryError
from agent.images.auth import registry_provider
from agent.images.naming import ImageRef, content_tag, parse_reference
from agent.images.oci import Manifest
from agent.images.registry import Registry
from agent.images.settings import ImageSettings

log = logging.getLogger(__name__)


@dataclass
class Destination:
    """Where a model image goes, named after its content, and what the registry said."""

    ref: ImageRef  # target repository + content-addressed tag
    base_image: str  # the base image as the profile names it
    base: ImageRef
    model_digest: str
    base_manifest: Manifest | None  # None when the agent could not read the base image
    registry: Registry | None  # the target registry; None when the agent cannot use it
    base_registry: Registry | None
    existing: str | None = None  # manifest digest when the tag is already there

    @property
    def tag(self) -> str:
        return self.ref.tag or "latest"


def _warn_unchecked(host: str, target: ImageRef, exc: RegistryError, consequence: str) -> None:
    log.warning("the agent cannot reach or authenticate to registry %s (%s): %s, and the "
                "Kaniko build will push %s/%s with the builder's identity "
                "(images.kaniko.secret_name / config_map / service_account)",
                host, exc, consequence, target.registry, target.repository)


class _Unreachable(Exception):
    """A registry failure, with the host it came from."""

    def __init__(self, host: str, error: RegistryError) -> None:
        super().__init__(str(error))
        self.host = host
        self.error = error


def _registries(images: ImageSettings, target: ImageRef,
                base: ImageRef) -> tuple[Registry, Registry, Manifest]:
    """Reach the target and base registries (pinged) and resolve the base image."""
    checking = target.registry
    try:
        registry = Registry(target.registry, images,
                            registry_provider(images, target.registry))
        registry.ping()
        checking = base.registry
        if base.registry == target.registry:
            base_registry = registry
        else:
            base_registry = Registry(base.registry, images,
                                     registry_provider(images, base.registry, base=True))
            base_registry.ping()
        return registry, base_registry, base_registry.resolve_image(base.repository,
                                                                    base.reference)
    except RegistryError as exc:
        raise _Unreachable(checking, exc) from exc


def address(images: ImageSettings, target: ImageRef, base_image: str, model_digest: str,
            recipe: str, *, tolerant: bool = False) -> Destination:
    """Name the image after its content and check the registry once.

    `recipe` identifies the builder and its settings; `tolerant`: registry
    failures are logged and the build goes ahead instead of failing.
    """
    base = parse_reference(base_image)
    try:
        registry, base_registry, manifest = _registries(images, target, base)
    except _Unreachable as exc:
        if not tolerant:
            raise exc.error from None
        _warn_unchecked(exc.host, target, exc.error, "the tag is derived from the base reference")
        tag = content_tag(model_digest, base.digest or str(base), recipe)
        return Destination(target.with_tag(tag), base_image, base, model_digest, None, None, None)
    tag = content_tag(model_digest, manifest.digest, recipe)
    found = Destination(target.with_tag(tag), base_image, base, model_digest, manifest,
                        registry, base_registry)
    try:
        found.existing = registry.manifest_digest(target.repository, tag)
        if not found.existing:
            registry.provider.ensure_repository(registry.host, target.repository)
    except RegistryError as exc:
        if not tolerant:
            raise
        _warn_unchecked(target.registry, target, exc, "no existing image is reused")
        found.registry = None
    return found

"""Model images: content-addressed tags, reuse, and the direct / Kaniko builders.

`build_model_image` is the package's one entry point (see
docs/dev/team-contracts.md). It names the image after its content (model
digest + base image digest + recipe), reuses it when the registry already has
that tag, and otherwise builds it with the environment's builder:

- `direct` (default): in the agent process, through the registry API only;
- `kaniko`: a Kubernetes Job (needs `kube=`);
- `none`: deployments must name a ready image (`spec.model.image`).

A deployment that names `spec.model.image` is never built.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, BuildError, RegistryError
from agent.images.naming import parse_reference, target_repository

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.model import DeploymentSpec
    from agent.plugins import Reporter

log = logging.getLogger(__name__)

__all__ = ["BuiltImage", "build_model_image"]


@dataclass(frozen=True)
class BuiltImage:
    """An image ready to run."""

    reference: str  # registry/repo:tag
    digest: str  # manifest digest "sha256:..."
    reused: bool  # True when the content-addressed tag already existed


def image_labels(spec: DeploymentSpec) -> dict[str, str]:
    """Labels every generated image carries (no URIs: they may hold signed query strings)."""
    return {
        "org.opencontainers.image.title": f"model {spec.model.id}",
        "org.opencontainers.image.version": spec.model.id,
        "org.opencontainers.image.vendor": "management-agent",
        "io.management-agent.model-id": spec.model.id,
        "io.management-agent.deployment-id": spec.id,
    }


def _ready_image(image: str, settings: Settings) -> BuiltImage:
    """A named image: check it exists when the registry lets us look (best effort)."""
    from agent.images.auth import provider_for
    from agent.images.registry import Registry

    ref = parse_reference(image)
    try:
        quick = settings.images.model_copy(update={"retries": 1})  # a check, not a build
        registry = Registry(ref.registry, quick,
                            provider_for(settings.images.credentials, ref.registry))
        registry.ping()
        digest = registry.manifest_digest(ref.repository, ref.reference)
    except RegistryError as exc:
        log.warning("cannot check that image %s exists: %s", image, exc)
        return BuiltImage(image, ref.digest or "", True)
    if digest is None:
        raise BuildError(f"image {image} named by the deployment was not found in its registry")
    return BuiltImage(image, digest, True)


def _open_model(spec: DeploymentSpec, settings: Settings,
                credentials: Mapping[str, str] | None) -> Any:
    if not spec.model.uri:
        raise BuildError(f"deployment {spec.id}: the model has neither a uri nor an image")
    from agent.artifacts import open_model

    return open_model(spec.model.uri, settings.artifacts, credentials)


def build_model_image(spec: DeploymentSpec, base_image: str, model_path: str,
                      settings: Settings, report: Reporter,
                      credentials: Mapping[str, str] | None = None, *,
                      kube: Any = None, source: Any = None) -> BuiltImage:
    """Build (or reuse) the image serving `spec.model` on `base_image` at `model_path`.

    `credentials`: decoded data of the model's artifact secret (for the model
    download, never for the registry). `source`: a ready ModelSource (tests,
    bench); by default the model is opened with `agent.artifacts.open_model`.
    """
    if spec.model.image:
        report(f"using the deployment's image {spec.model.image}", image=spec.model.image)
        return _ready_image(spec.model.image, settings)
    images = settings.images
    if images.builder == "none":
        raise BuildError(
            f"deployment {spec.id} names no image and images.builder is none: set "
            "spec.model.image or choose the direct or kaniko builder"
        )
    target = target_repository(images.generated_image_repository, images.repository_layout,
                               spec.id, spec.model.id)

    def open_source() -> Any:
        return source if source is not None else _open_model(spec, settings, credentials)

    try:
        if images.builder == "kaniko":
            from agent.images.kaniko import build_with_kaniko

            return build_with_kaniko(spec, base_image, model_path, settings, report,
                                     target=target, open_source=open_source, kube=kube)
        from agent.images.direct import DirectBuilder

        result = DirectBuilder(images).build(
            base_image=base_image, target=target, model_path=model_path,
            open_source=open_source, labels=image_labels(spec), report=report,
        )
        return BuiltImage(result.reference, result.digest, result.reused)
    except AgentError:
        raise
    except OSError as exc:
        raise BuildError(f"building the image of deployment {spec.id} failed: "
                         f"{type(exc).__name__}: {exc.strerror or ''}") from None

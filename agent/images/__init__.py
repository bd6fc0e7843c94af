"""Model images: the whole image question of a deployment, answered in one place.

`resolve_image` is what plugins call: it picks the delivery mode
(`agent.images.delivery`), in image mode builds (or reuses) the model image,
and in image-volume mode pushes (or reuses) the model artifact
(`agent.images.modelpack`) and builds nothing. `build_model_image` is the build itself (see
docs/dev/team-contracts.md): it names the image after its content (model
digest + base image digest + recipe) and checks the registry once
(`agent.images.content`), reuses the image when the tag is there, and
otherwise hands over to the environment's builder, which only builds:

- `direct` (default): in the agent process, through the registry API only;
- `kaniko`: a Kubernetes Job (needs `kube=`);
- `none`: deployments must name a ready image (`spec.model.image`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agent.artifacts.secrets import read_credentials_secret
from agent.errors import AgentError, BuildError, InvalidActionError, RegistryError
from agent.images.delivery import DeliveryMode, ModelDelivery, delivery_mode
from agent.images.naming import parse_reference, target_repository
from agent.logs import redact_uri

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.images.content import Destination
    from agent.model import DeploymentSpec
    from agent.plugins import Reporter
    from agent.plugins.kubernetes.settings import ServerProfile

log = logging.getLogger(__name__)

__all__ = ["BuiltImage", "DeliveryMode", "ModelDelivery", "build_model_image", "resolve_image"]


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


def resolve_image(spec: DeploymentSpec, profile: ServerProfile, settings: Settings,
                  report: Reporter, *, kube: Any = None,
                  mode: DeliveryMode | None = None) -> ModelDelivery:
    """What the server container of `spec` runs, built first when the mode needs it.

    A ready `spec.model.image` is used as named (the rollout's pull says
    whether it exists). `kube`: the plugin's KubeClient; it reads the model's
    credentials secret and runs Kaniko builds. Without it (the filesystem
    plugin) only the direct builder can build. `mode`: the plugin's decision
    (`delivery_mode` with the cluster's version); None decides without one.
    """
    if mode is None:
        mode = delivery_mode(spec.model, settings.plugin.kubernetes.model_delivery,
                             settings.images.builder)
    if spec.model.image:
        return ModelDelivery(mode, spec.model.image)
    if profile.image is None:
        raise InvalidActionError(
            f"deployment {spec.id}: its server profile has no base image; name an image on "
            "the model or set plugin.kubernetes.server_profiles.<name>.image")
    if mode is DeliveryMode.STORAGE_INITIALIZER:
        report(f"storage-initializer mode: {profile.image} fetches "
               f"{redact_uri(spec.model.uri)} at start")
        return ModelDelivery(mode, profile.image)
    credentials = None
    if spec.model.credentials_secret and kube is not None:
        # the ops' Secret-name policy applies before any value is read (docs/security.md)
        credentials = read_credentials_secret(kube, spec.model.credentials_secret,
                                              settings.artifacts)
    if mode is DeliveryMode.IMAGE_VOLUME:
        return _model_volume(spec, profile.image, settings, report, credentials)
    if settings.images.builder == "none":
        raise InvalidActionError(
            f"deployment {spec.id}: images.builder is none and plugin.kubernetes.model_delivery "
            "is image: give model.image or use storage-initializer mode")
    if settings.images.builder == "kaniko" and kube is None:
        raise InvalidActionError(
            f"deployment {spec.id}: images.builder is kaniko, which needs a cluster; the "
            "filesystem plugin builds model images with images.builder=direct only: give "
            "model.image or use storage-initializer mode")
    report(f"building the model image from {profile.image}")
    built = build_model_image(spec, profile.image, profile.model_path, settings, report,
                              credentials, kube=kube)
    report(f"model image {built.reference} ({built.digest}) "
           + ("reused" if built.reused else "built"), image=built.reference)
    return ModelDelivery(mode, built.reference, built.digest, built.reused)


def _model_volume(spec: DeploymentSpec, server_image: str, settings: Settings,
                  report: Reporter, credentials: Mapping[str, str] | None) -> ModelDelivery:
    """image-volume mode: push the model as an artifact (or reuse it); no image is built."""
    from agent.images.modelpack import push_model_artifact

    images = settings.images
    target = target_repository(images.generated_image_repository, images.repository_layout,
                               spec.id, spec.model.id)
    report(f"image-volume mode: {server_image} mounts the model from an image volume")
    try:
        with _open_model(spec, settings, credentials) as source:
            pushed = push_model_artifact(images, target, source, image_labels(spec), report)
    except AgentError:
        raise
    except OSError as exc:
        raise BuildError(f"pushing the model artifact of deployment {spec.id} failed: "
                         f"{type(exc).__name__}: {exc.strerror or ''}") from None
    if not pushed.reused:
        report(f"model artifact pushed: {pushed.volume} (ModelPack: {pushed.artifact})",
               image=pushed.volume, digest=pushed.digest, bytes_uploaded=pushed.bytes_uploaded)
    # the tag for humans and rollback, the digest for the pod (model_volume.pinned)
    return ModelDelivery(DeliveryMode.IMAGE_VOLUME, server_image, pushed.digest, pushed.reused,
                         volume=f"{pushed.volume}@{pushed.digest}")


def _ready_image(image: str, settings: Settings) -> BuiltImage:
    """A named image: check it exists when the registry lets us look (best effort)."""
    from agent.images.auth import registry_provider
    from agent.images.registry import Registry

    ref = parse_reference(image)
    try:
        quick = settings.images.model_copy(update={"retries": 1})  # a check, not a build
        registry = Registry(ref.registry, quick, registry_provider(quick, ref.registry))
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


class Builder(Protocol):
    """What `build_model_image` needs of a builder (`DirectBuilder`, `KanikoBuilder`)."""

    reads_model: bool  # needs the model's bytes: the source stays open during the build
    tolerant: bool  # builds although the agent itself cannot use the registry

    def recipe(self, model_path: str) -> str: ...

    def build(self, dest: Destination, spec: DeploymentSpec, source: Any, model_path: str,
              labels: dict[str, str], report: Reporter) -> tuple[str, dict[str, Any]]: ...


def _builder(settings: Settings, kube: Any) -> Builder:
    """The configured builder."""
    if settings.images.builder == "kaniko":
        if kube is None:
            raise BuildError("images.builder is kaniko but no Kubernetes client was given (kube=)")
        from agent.images.fetcher import fetcher_env
        from agent.images.kaniko import KanikoBuilder

        namespace = settings.images.kaniko.namespace or kube.namespace  # the agent's own
        env = fetcher_env(settings.artifacts, settings.tls)
        return KanikoBuilder(settings.images, kube, namespace, env)
    from agent.images.direct import DirectBuilder

    return DirectBuilder(settings.images)


def build_model_image(spec: DeploymentSpec, base_image: str, model_path: str,
                      settings: Settings, report: Reporter,
                      credentials: Mapping[str, str] | None = None, *,
                      kube: Any = None, source: Any = None) -> BuiltImage:
    """Build (or reuse) the image serving `spec.model` on `base_image` at `model_path`.

    `credentials`: decoded data of the model's artifact secret (for the model
    download, never for the registry). `source`: a ready ModelSource (tests,
    bench); by default the model is opened with `agent.artifacts.open_model`.
    """
    from agent.images.content import address

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
    builder = _builder(settings, kube)
    try:
        with ExitStack() as stack:
            model = source if source is not None else _open_model(spec, settings, credentials)
            model = stack.enter_context(model)
            dest = address(images, target, base_image, model.digest,
                           builder.recipe(model_path), tolerant=builder.tolerant)
            if dest.existing:
                report(f"image reused: {dest.ref}", image=str(dest.ref), digest=dest.existing)
                return BuiltImage(str(dest.ref), dest.existing, True)
            if not builder.reads_model:
                stack.close()  # the builder fetches the model itself: release the source
                model = None
            digest, details = builder.build(dest, spec, model, model_path, image_labels(spec),
                                            report)
    except AgentError:
        raise
    except OSError as exc:
        raise BuildError(f"building the image of deployment {spec.id} failed: "
                         f"{type(exc).__name__}: {exc.strerror or ''}") from None
    report(f"image pushed: {dest.ref}", image=str(dest.ref), digest=digest, **details)
    return BuiltImage(str(dest.ref), digest, False)

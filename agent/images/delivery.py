"""Model delivery modes: how a prediction server gets its model, decided in one place.

- `image`: the model is baked into an image (built by `images.builder`, or the
  deployment names a ready `spec.model.image`);
- `storage-initializer`: the unchanged base server image, plus an init
  container running the agent's own image (`management-agent fetch-model`)
  into an emptyDir; a `pvc://` model is mounted instead.

`plugin.kubernetes.model_delivery: auto` means storage-initializer when
`images.builder` is `none` (nothing can build an image), image otherwise.

Adding a mode is local: a `DeliveryMode` member, its `Mode` entry in `MODES`,
the value in `KubernetesSettings.model_delivery`, its branch in
`agent.images.resolve_image` and, when it changes the pod, its branch in
`agent.plugins.kubernetes.storage.model_delivery` (see docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec, ModelRef

#: model URI schemes the image builders can read (file:// is on the agent's own disk)
BUILD_SCHEMES = ("s3", "gs", "http", "https", "oci", "file", "pvc", "models")
#: what `management-agent fetch-model` in the cluster can read, plus pvc:// (mounted)
FETCH_SCHEMES = ("s3", "gs", "http", "https", "oci", "pvc", "models")


class DeliveryMode(StrEnum):
    """How the model reaches the server container."""

    IMAGE = "image"
    STORAGE_INITIALIZER = "storage-initializer"


@dataclass(frozen=True)
class Mode:
    """What a delivery mode can serve and needs."""

    schemes: tuple[str, ...]  # model URI schemes it can deliver
    how: str  # for messages: "cannot be served <how>"
    needs_agent_image: bool  # an init container runs the agent's image (pvc:// excepted)


MODES: dict[DeliveryMode, Mode] = {
    DeliveryMode.IMAGE: Mode(BUILD_SCHEMES, "", needs_agent_image=False),
    DeliveryMode.STORAGE_INITIALIZER: Mode(FETCH_SCHEMES, "by the storage initializer",
                                           needs_agent_image=True),
}


@dataclass(frozen=True)
class ModelDelivery:
    """The outcome of `agent.images.resolve_image`: what the server container runs."""

    mode: DeliveryMode
    image: str  # the server container's image
    digest: str | None = None  # manifest digest of a built image, when known
    reused: bool = False  # True when a built image's content-addressed tag already existed


def scheme(uri: str) -> str:
    """The lower-cased scheme of a model URI (`s3`, `pvc`, `models`, ...)."""
    return uri.split(":", 1)[0].lower()


def delivery_mode(model: ModelRef, configured: str, builder: str = "direct") -> DeliveryMode:
    """The mode of one model: a ready image or no URI is always `image`.

    `configured` is `plugin.kubernetes.model_delivery` (auto | image |
    storage-initializer), `builder` is `images.builder`.
    """
    if model.image is not None or model.uri is None:
        return DeliveryMode.IMAGE
    if configured == "auto":
        return DeliveryMode.STORAGE_INITIALIZER if builder == "none" else DeliveryMode.IMAGE
    return DeliveryMode(configured)


def check_delivery(spec: DeploymentSpec, mode: DeliveryMode, base_image: str | None,
                   agent_image: str | None) -> None:
    """Refuse a model the mode cannot deliver, before any cluster or registry call."""
    model = spec.model
    if model.image is None and model.uri is None:
        raise InvalidActionError(f"deployment {spec.id}: the model needs a uri (artifact) or "
                                 "an image (ready-built server)")
    if model.image is not None or model.uri is None:
        return
    rules = MODES[mode]
    found = scheme(model.uri)
    if found not in rules.schemes:
        hint = ("; file:// paths live on the agent's disk: use pvc:// or build an image"
                if found == "file" else "")
        raise InvalidActionError(
            f"deployment {spec.id}: " + f"model uri scheme {found}:// cannot be served "
            f"{rules.how}".rstrip()
            + f" (supported: {', '.join(s + '://' for s in rules.schemes)}){hint}")
    if base_image is None:
        raise InvalidActionError(
            f"deployment {spec.id}: the server profile has no base image: set model.image, "
            "config.base_image, or choose a profile with an image")
    if rules.needs_agent_image and found != "pvc" and not agent_image:
        raise InvalidActionError(
            f"deployment {spec.id}: {mode} mode needs plugin.kubernetes.agent_image (the "
            "agent's own image runs `management-agent fetch-model` in an init container)")

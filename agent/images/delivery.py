"""Model delivery modes: how a prediction server gets its model, decided in one place.

- `image`: the model is baked into an image (built by `images.builder`, or the
  deployment names a ready `spec.model.image`);
- `storage-initializer`: the unchanged base server image, plus an init
  container running the agent's own image (`management-agent fetch-model`)
  into an emptyDir; a `pvc://` model is mounted instead;
- `image-volume`: the unchanged base server image, and the model pushed once
  as a ModelPack artifact + model-only image (`agent.images.modelpack`),
  mounted read-only at the model path by a Kubernetes image volume
  (`volumes[].image`: beta and on by default since 1.35, GA in 1.36).

`plugin.kubernetes.model_delivery: auto` means image-volume when the cluster's
version (discovery) is at least `image_volume_min_version` and the direct
builder pushes (the agent itself uploads the artifact), otherwise image, and
storage-initializer when `images.builder` is `none` (nothing can build or push).
The nodes' container runtimes (containerd 2.1+, CRI-O 1.31+ mount image
volumes) are not checked: the agent's namespaced Role cannot read Nodes, so
ops with older nodes set `model_delivery: image`.

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
    IMAGE_VOLUME = "image-volume"


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
    DeliveryMode.IMAGE_VOLUME: Mode(BUILD_SCHEMES, "from an image volume",
                                    needs_agent_image=False),
}

#: the tag prefix of a model-only image (`agent.images.modelpack`): what an image volume mounts
VOLUME_TAG_PREFIX = "mv-"


@dataclass(frozen=True)
class ModelDelivery:
    """The outcome of `agent.images.resolve_image`: what the server container runs."""

    mode: DeliveryMode
    image: str  # the server container's image
    digest: str | None = None  # manifest digest of a built image, when known
    reused: bool = False  # True when a built image's content-addressed tag already existed
    #: image-volume mode: the model-only image mounted at the model path, `repo:mv-<hash>@<digest>`
    volume: str | None = None

    @property
    def model_image(self) -> str:
        """What carries the model (recorded as last good, reported): the volume or the image."""
        return self.volume or self.image


def scheme(uri: str) -> str:
    """The lower-cased scheme of a model URI (`s3`, `pvc`, `models`, ...)."""
    return uri.split(":", 1)[0].lower()


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of `1.35`, `v1.35.2`, `1.36+` (GKE/EKS add suffixes)."""
    major, _, rest = version.strip().lstrip("v").partition(".")
    minor = "".join(ch for ch in rest.split(".")[0] if ch.isdigit())
    return int(major or 0), int(minor or 0)


def image_volumes_supported(cluster_version: str | None, minimum: str) -> bool:
    """Does a cluster of `cluster_version` mount image volumes (on by default)?"""
    return cluster_version is not None and \
        parse_version(cluster_version) >= parse_version(minimum)


def delivery_mode(model: ModelRef, configured: str, builder: str = "direct",
                  cluster_version: str | None = None,
                  image_volume_min_version: str = "1.35") -> DeliveryMode:
    """The mode of one model: a ready image or no URI is always `image`.

    `configured` is `plugin.kubernetes.model_delivery` (auto | image |
    storage-initializer | image-volume), `builder` is `images.builder`,
    `cluster_version` the API server's `/version` (None: unknown, e.g. the
    filesystem plugin: `auto` then never picks image-volume).
    """
    if model.image is not None or model.uri is None:
        return DeliveryMode.IMAGE
    if configured == "auto":
        if builder == "none":
            return DeliveryMode.STORAGE_INITIALIZER
        if builder == "direct" and image_volumes_supported(cluster_version,
                                                           image_volume_min_version):
            return DeliveryMode.IMAGE_VOLUME
        return DeliveryMode.IMAGE
    return DeliveryMode(configured)


def mode_of_last_good(image: str, current: DeliveryMode) -> DeliveryMode:
    """The mode a recorded last-good model image was delivered in (for a rollback)."""
    tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2]
    if tag.startswith(VOLUME_TAG_PREFIX):
        return DeliveryMode.IMAGE_VOLUME
    return DeliveryMode.IMAGE if current is DeliveryMode.IMAGE_VOLUME else current


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

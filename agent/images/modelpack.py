"""A model as an OCI artifact with CNCF ModelPack media types, plus a model-only image.

What is pushed (one content address, no base image, nothing built):

- the layers: one uncompressed tar per file (ModelPack recommends
  uncompressed weights: they hardly compress, and the blob digest is then the
  diff-id), at most MAX_FILE_LAYERS of them (`plan_layers` groups the rest);
  every path is relative to the model's root and each one-file layer carries
  `org.cncf.model.filepath`;
- `mp-<hash>`: the ModelPack artifact (`artifactType`
  `application/vnd.cncf.model.manifest.v1+json`, config
  `application/vnd.cncf.model.config.v1+json` with the model's format and
  digest, layers `application/vnd.cncf.model.<kind>.v1.tar`), for tools that
  speak ModelPack;
- `mv-<hash>`: a model-only *image* of the same blobs (OCI image config,
  `application/vnd.oci.image.layer.v1.tar` layers, the ModelPack
  `artifactType` and annotations kept), which containerd and CRI-O both mount
  as a Kubernetes image volume (containerd unpacks only image layers; CRI-O
  mounts artifacts too). That one is what `image-volume` mode mounts, by
  its digest (`agent.plugins.kubernetes.model_volume`): the tag can be moved.

The blobs are uploaded once and referenced by both manifests. `mv-<hash>` is
pushed last, so its tag being there means everything is: a repeated push is
one HEAD request and uploads nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.images.auth import registry_provider
from agent.images.layer import LayerProgress, LayerSink, ModelSourceLike, write_model_tar
from agent.images.naming import ImageRef
from agent.images.oci import OCI_MANIFEST
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import ImageSettings

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
#: ModelPack media-type prefixes a reader accepts: the CNCF one and the older CNAI one
PREFIXES = ("application/vnd.cncf.model.", "application/vnd.cnai.model.")
#: layer annotations naming a file's path (ModelPack, its CNAI predecessor)
FILEPATH_KEYS = ("org.cncf.model.filepath", "org.cnai.model.filepath")
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
RECIPE = "modelpack/1"
MAX_FILE_LAYERS = 64

WEIGHT_SUFFIXES = (".joblib", ".pkl", ".pickle", ".bin", ".pt", ".pth", ".onnx", ".safetensors",
                   ".gguf", ".h5", ".keras", ".pb", ".ubj", ".bst", ".model", ".skops",
                   ".cbm", ".txt.gz", ".npy", ".npz", ".msgpack", ".tflite", ".mar")
DOC_NAMES = ("readme", "license", "notice", "model_card")
CODE_SUFFIXES = (".py", ".ipynb", ".sh")


def file_kind(path: str) -> str:
    """The ModelPack layer kind of one model file: weight, weight.config, doc or code."""
    name = posixpath.basename(path).lower()
    if name.endswith(WEIGHT_SUFFIXES) or name in ("model.json", "model.xgb"):
        return "weight"
    if name.startswith(DOC_NAMES) or name.endswith((".md", ".rst")):
        return "doc"
    if name.endswith(CODE_SUFFIXES):
        return "code"
    return "weight.config"


def model_format(paths: list[str]) -> str:
    """The model's format for the ModelPack config (what a server would load)."""
    names = {posixpath.basename(p).lower() for p in paths}
    if "mlmodel" in names:
        return "mlflow"
    if "model-settings.json" in names:
        return "mlserver"
    for suffix, fmt in ((".safetensors", "safetensors"), (".onnx", "onnx"), (".gguf", "gguf"),
                        (".joblib", "joblib"), (".pkl", "pickle"), (".pt", "pytorch"),
                        (".pth", "pytorch"), (".ubj", "xgboost"), (".bst", "xgboost")):
        if any(n.endswith(suffix) for n in names):
            return fmt
    return "xgboost" if "model.json" in names else "unknown"


def is_modelpack(media_type: str) -> bool:
    """A ModelPack media type or artifact type, CNCF or CNAI prefix."""
    return media_type.startswith(PREFIXES)


def file_path_annotation(annotations: dict[str, str]) -> str | None:
    """The file path a ModelPack layer annotates (either prefix), if any."""
    return next((annotations[k] for k in FILEPATH_KEYS if annotations.get(k)), None)


@dataclass(frozen=True)
class ModelArtifact:
    """The pushed model: the ModelPack artifact and the model-only image of the same blobs."""

    artifact: str  # registry/repo:mp-<hash>, the ModelPack artifact
    volume: str  # registry/repo:mv-<hash>; an image volume mounts it by `digest`
    digest: str  # manifest digest of the model-only image
    reused: bool  # True when it was there already: nothing uploaded
    bytes_uploaded: int = 0


@dataclass(frozen=True)
class _Layer:
    kind: str
    digest: str
    size: int
    path: str  # the file path of a one-file layer, else ""


def content_hash(model_digest: str, settings: ImageSettings) -> str:
    """The 20 hex digits both tags share: model digest + recipe + file owner."""
    material = f"{model_digest}|{RECIPE}/{settings.recipe_version}|" \
               f"{settings.layer_uid}:{settings.layer_gid}"
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def push_model_artifact(settings: ImageSettings, target: ImageRef, source: ModelSourceLike,
                        labels: dict[str, str], report: Callable[..., None]) -> ModelArtifact:
    """Push `source` (an open ModelSource) to `target`'s repository, or reuse what is there."""
    registry = Registry(target.registry, settings, registry_provider(settings, target.registry))
    registry.ping()
    tag = content_hash(source.digest, settings)
    repo, base = target.repository, f"{target.registry}/{target.repository}"
    existing = registry.manifest_digest(repo, f"mv-{tag}")
    if existing:
        report(f"model artifact reused: {base}:mv-{tag}", image=f"{base}:mv-{tag}")
        return ModelArtifact(f"{base}:mp-{tag}", f"{base}:mv-{tag}", existing, True)
    registry.provider.ensure_repository(registry.host, repo)
    files = sorted(source.files(), key=lambda f: f.path)
    layers = _push_layers(registry, repo, files, settings, report)
    annotations = {**labels, "io.management-agent.model-digest": source.digest}
    fmt = model_format([f.path for f in files])
    artifact = _manifest(registry, repo, _modelpack_config(labels, source.digest, fmt, layers),
                         MODEL_CONFIG, layers, annotations, modelpack=True)
    registry.put_manifest(repo, f"mp-{tag}", artifact, OCI_MANIFEST)
    image = _manifest(registry, repo, _image_config(labels, source.digest, layers), OCI_CONFIG,
                      layers, annotations, modelpack=False)
    digest = registry.put_manifest(repo, f"mv-{tag}", image, OCI_MANIFEST)
    uploaded = registry.stats["uploaded_bytes"]
    log.info("model artifact %s:mv-%s: %d layers, %d bytes uploaded", base, tag, len(layers),
             uploaded)
    return ModelArtifact(f"{base}:mp-{tag}", f"{base}:mv-{tag}", digest, False, uploaded)


def plan_layers(files: list[Any]) -> list[tuple[str, list[Any]]]:
    """(kind, files) of each layer: at most MAX_FILE_LAYERS layers, whatever the file count.

    A layer per file, as ModelPack tools do, while the files fit. Past that (an
    overlay mount of hundreds of layers fails: overlayfs stacks at most ~128 lower
    directories, and containerd and CRI-O refuse long before), one layer per kind for
    all but the weights, a layer each for the largest weights (they are what a new
    model version shares with the old one), and one final layer for the other weights.
    `files` are sorted by path, so the layers (and their digests) are deterministic.
    """
    if len(files) <= MAX_FILE_LAYERS:
        return [(file_kind(f.path), [f]) for f in files]
    weights = [f for f in files if file_kind(f.path) == "weight"]
    others: dict[str, list[Any]] = {}
    for f in files:
        if file_kind(f.path) != "weight":
            others.setdefault(file_kind(f.path), []).append(f)
    room = MAX_FILE_LAYERS - len(others) - 1  # one layer left for the remaining weights
    own = {f.path for f in sorted(weights, key=lambda f: (-f.size, f.path))[:room]}
    groups: list[tuple[str, list[Any]]] = [("weight", [f]) for f in weights if f.path in own]
    rest = [f for f in weights if f.path not in own]
    if rest:
        groups.append(("weight", rest))
    return groups + sorted(others.items())


def _push_layers(registry: Registry, repo: str, files: list[Any], settings: ImageSettings,
                 report: Callable[..., None]) -> list[_Layer]:
    total = sum(f.size for f in files)
    done = 0
    layers = []
    for kind, group in plan_layers(files):
        upload = registry.start_upload(repo)
        offset = done
        progress = LayerProgress(report, total, settings.progress_bytes, upload)
        sink = LayerSink(upload, "none", None,
                         lambda n, o=offset, p=progress: p(o + n))  # type: ignore[misc]
        try:
            write_model_tar(group, "", sink, settings.layer_uid, settings.layer_gid)
            digest, _diff_id = sink.close()  # uncompressed: one hash, blob digest == diff-id
            upload.finish(digest)
        except BaseException:
            upload.cancel()
            raise
        done += sum(f.size for f in group)
        layers.append(_Layer(kind, digest, sink.size, group[0].path if len(group) == 1 else ""))
    return layers


def _modelpack_config(labels: dict[str, str], model_digest: str, fmt: str,
                      layers: list[_Layer]) -> bytes:
    config = {
        "descriptor": {"name": labels.get("io.management-agent.model-id", ""),
                       "version": labels.get("io.management-agent.model-id", ""),
                       "vendor": "management-agent", "revision": model_digest},
        "config": {"format": fmt},
        "modelfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _image_config(labels: dict[str, str], model_digest: str, layers: list[_Layer]) -> bytes:
    """An OCI image config: containerd reads rootfs.diff_ids to unpack the volume."""
    config = {
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Labels": {**labels, "io.management-agent.model-digest": model_digest}},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "history": [{"created": "1970-01-01T00:00:00Z",
                     "created_by": f"management-agent {RECIPE}: model {layer.path or layer.kind}"}
                    for layer in layers],
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _manifest(registry: Registry, repo: str, config: bytes, config_type: str,
              layers: list[_Layer], annotations: dict[str, str], *, modelpack: bool) -> bytes:
    registry.push_blob(repo, config)
    descriptors = []
    for layer in layers:
        media_type = f"application/vnd.cncf.model.{layer.kind}.v1.tar" if modelpack else OCI_TAR
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": layer.digest,
                                      "size": layer.size}
        if layer.path:
            descriptor["annotations"] = {FILEPATH_KEYS[0]: layer.path}
        descriptors.append(descriptor)
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": config_type, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": descriptors, "annotations": annotations,
    }
    return json.dumps(manifest, separators=(",", ":")).encode()

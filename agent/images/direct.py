"""The direct builder: a model image without Docker, Kaniko, root or a temp copy.

1. Resolve the base (prediction server) image for linux/amd64.
2. Make its config and layers available in the target repository: a
   cross-repository mount on the same registry (no bytes move), a streamed
   copy from another registry.
3. Stream the model's files into ONE deterministic tar layer at the profile's
   model path, hashing the tar (diff-id) and the compressed stream (blob
   digest) on the fly, and push it through a chunked upload whose closing
   PUT carries the digest. Memory stays flat in the model size.
4. Write the config (base config + MODEL_PATH, labels, history, diff-id) and
   a manifest of the base's media-type family, and tag it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from agent.images import deps_layer
from agent.images.content import Destination
from agent.images.layer import (
    OCI_LAYER,
    LayerProgress,
    LayerResult,
    LayerSink,
    ModelSourceLike,
    write_model_tar,
)
from agent.images.naming import BUILDER_RECIPE
from agent.images.oci import DOCKER_MANIFEST, OCI_MANIFEST, Manifest
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import ImageSettings
from agent.images.upload import BlobUpload, copy_blob

log = logging.getLogger(__name__)

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_TO_OCI = {
    DOCKER_LAYER_GZIP: OCI_LAYER["gzip"],
    "application/vnd.docker.image.rootfs.diff.tar": OCI_LAYER["none"],
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


class DirectBuilder:
    """Builds and pushes a model image through the registry API only.

    `agent.images.content.address` has already named the image, reached both
    registries and found that the tag does not exist yet.
    """

    reads_model = True  # streams the model's bytes into the layer
    tolerant = False  # builds only through registries the agent itself can use

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings

    def recipe(self, model_path: str) -> str:
        """What, besides model and base digests, goes into the content address."""
        deps = f"/{deps_layer.RECIPE}" if self.settings.dependencies.enabled else ""
        return f"{BUILDER_RECIPE}/{self.settings.recipe_version}/{self.settings.compression}/" \
               f"{model_path}{deps}"

    def build(self, dest: Destination, spec: object, source: ModelSourceLike, model_path: str,
              labels: dict[str, str], report: Callable[..., None]) -> tuple[str, dict[str, Any]]:
        """Push base blobs, the model layer, config and manifest; (digest, event details)."""
        dst, src, base_manifest = dest.registry, dest.base_registry, dest.base_manifest
        assert dst is not None and src is not None and base_manifest is not None
        target, base = dest.ref, dest.base
        report(f"building image {target} from {base}", image=str(target))
        base_data = base_manifest.data
        self._ensure_base_blobs(src, base.repository, dst, target.repository, base_data)
        deps = deps_layer.for_model(dest, source, self.settings, report)
        layer = self._push_model_layer(dst, target.repository, source, model_path, report)
        added = [deps.layer, layer] if deps else [layer]
        config = self._config(src.get_blob(base.repository, base_data["config"]["digest"]),
                              added, model_path,
                              {**labels, "io.management-agent.model-digest": dest.model_digest,
                               "org.opencontainers.image.base.name": str(base),
                               "org.opencontainers.image.base.digest": base_manifest.digest},
                              deps)
        manifest_raw, media_type = self._manifest(base_manifest, config, added)
        dst.push_blob(target.repository, config)
        digest = dst.put_manifest(target.repository, dest.tag, manifest_raw, media_type)
        details: dict[str, Any] = {"bytes_uploaded": dst.stats["uploaded_bytes"],
                                   "layer_size": layer.size}
        if deps:
            details.update(dependencies=list(deps.requirements),
                           dependency_layer_reused=deps.reused)
        return digest, details

    def _ensure_base_blobs(self, src: Registry, src_repo: str, dst: Registry, dst_repo: str,
                           manifest: dict[str, Any]) -> None:
        for descriptor in [manifest["config"], *manifest.get("layers", [])]:
            digest = descriptor["digest"]
            if src is dst:
                upload = dst.mount_blob(dst_repo, digest, src_repo)
                if upload is None:
                    continue
                log.info("registry %s did not mount %s: copying", dst.host, digest[:19])
            else:
                if dst.blob_exists(dst_repo, digest):
                    continue
                upload = dst.start_upload(dst_repo)
            self._copy_blob(src, src_repo, digest, upload)

    @staticmethod
    def _copy_blob(src: Registry, src_repo: str, digest: str, upload: BlobUpload) -> None:
        copy_blob(src.stream_blob(src_repo, digest), f"{src.host}/{src_repo}", digest, upload)

    def _push_model_layer(self, dst: Registry, repository: str, source: ModelSourceLike,
                          model_path: str, report: Callable[..., None]) -> LayerResult:
        settings = self.settings
        files = list(source.files())
        total = sum(f.size for f in files)
        upload = dst.start_upload(repository)
        sink = LayerSink(upload, settings.compression, settings.compression_level,
                         LayerProgress(report, total, settings.progress_bytes, upload),
                         adaptive=settings.gzip_store_incompressible)
        try:
            count = write_model_tar(files, model_path, sink, settings.layer_uid,
                                    settings.layer_gid)
            digest, diff_id = sink.close()
            upload.finish(digest)
        except BaseException:
            upload.cancel()
            raise
        log.info("model layer %s: %d files, %d bytes (%d compressed)", digest[:19], count,
                 sink.size, sink.compressed_size)
        return LayerResult(digest, diff_id, sink.compressed_size,
                           OCI_LAYER[settings.compression], sink.size)

    @staticmethod
    def _config(base_raw: bytes, added: list[LayerResult], model_path: str,
                labels: dict[str, str], deps: deps_layer.DependencyLayer | None) -> bytes:
        config = json.loads(base_raw)
        inner = config.setdefault("config", {}) or {}
        config["config"] = inner
        env = [e for e in inner.get("Env") or [] if not e.startswith("MODEL_PATH=")]
        if deps:  # first on the path: the layer holds only what the base lacks
            old = next((e[len("PYTHONPATH="):] for e in env if e.startswith("PYTHONPATH=")), "")
            env = [e for e in env if not e.startswith("PYTHONPATH=")]
            env.append("PYTHONPATH=" + ":".join(p for p in (deps.path, old) if p))
        inner["Env"] = [*env, f"MODEL_PATH={model_path}"]
        inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
        created = config.get("created", "1970-01-01T00:00:00Z")
        history = list(config.get("history") or [])
        if deps:
            history.append({"created": created, "created_by": f"management-agent "
                            f"{deps_layer.RECIPE}: pip install {' '.join(deps.requirements)}"})
        history.append({
            "created": created,
            "created_by": f"management-agent {BUILDER_RECIPE}: COPY model {model_path}",
            "comment": f"model {labels.get('io.management-agent.model-id', '')}",
        })
        config["history"] = history
        rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), *(a.diff_id for a in added)]
        return json.dumps(config, separators=(",", ":")).encode()

    def _manifest(self, base: Manifest, config: bytes,
                  added: list[LayerResult]) -> tuple[bytes, str]:
        data = base.data
        docker = base.media_type == DOCKER_MANIFEST and self.settings.compression == "gzip"
        layers = [dict(item) for item in data.get("layers", [])]
        if docker:
            media_type, config_type = DOCKER_MANIFEST, DOCKER_CONFIG
        else:
            media_type, config_type = OCI_MANIFEST, OCI_CONFIG
            for item in layers:
                item["mediaType"] = DOCKER_TO_OCI.get(item.get("mediaType", ""),
                                                      item.get("mediaType"))
        layers += [{"mediaType": DOCKER_LAYER_GZIP if docker else layer.media_type,
                    "digest": layer.digest, "size": layer.size} for layer in added]
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha256_digest(config),
                       "size": len(config)},
            "layers": layers,
        }
        return json.dumps(manifest, separators=(",", ":")).encode(), media_type

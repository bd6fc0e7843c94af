"""oci://registry/repository:tag or oci://registry/repository@sha256:... .

A model packaged as an OCI artifact or image:
- a KServe *modelcar* (or any image): the files under `/models` of its layers
  (tar / tar+gzip, applied in order, whiteouts honoured) are the model; the
  rest of the image (a busybox base, with its absolute symlinks) is ignored;
- an artifact whose layers are tars without `models/`: all their files;
- an ORAS-style artifact: non-tar layers carrying an
  `org.opencontainers.image.title` annotation are files of that name.
Layer contents go through the same safety checks as archives.

The digest is computed from the manifest's layer digests and sizes before any
blob is read. The registry client is agent.images.registry (auth challenges,
Basic/Bearer, retries, CA bundle); `settings.oci_insecure_registries` lists
plain-HTTP registries, credentials come from the secret's `.dockerconfigjson`
or `username`/`password`.
"""

from __future__ import annotations

import hashlib
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.artifacts import archive
from agent.artifacts.credentials import OciCredentials
from agent.artifacts.digest import listing_digest
from agent.artifacts.egress import EgressPolicy, guarded_session
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import (
    BaseSource,
    ModelFile,
    ResumableStream,
    TransientArtifactError,
    buffered,
)
from agent.errors import AgentError, ArtifactError
from agent.logs import redact_uri

TITLE = "org.opencontainers.image.title"
CHUNK = 1024 * 1024
MODELS_DIR = "models"


def parse(uri: str) -> tuple[str, str, str]:
    """(registry host, repository, reference)."""
    rest = uri[len("oci://"):] if uri.startswith("oci://") else ""
    host, _, path = rest.partition("/")
    if not host or not path:
        raise ArtifactError(f"{redact_uri(uri)}: expected oci://<registry>/<repository>[:tag|@digest]")
    if "@" in path:
        repo, ref = path.split("@", 1)
    else:
        head, _, tail = path.rpartition(":")
        repo, ref = (head, tail) if head and "/" not in tail else (path, "latest")
    if not repo or not ref:
        raise ArtifactError(f"{redact_uri(uri)}: expected oci://<registry>/<repository>[:tag|@digest]")
    return host, repo, ref


def is_tar(media_type: str) -> bool:
    return "tar" in media_type and "zstd" not in media_type


class OciSource(BaseSource):
    def __init__(
        self, uri: str, settings: ArtifactSettings, creds: OciCredentials | None
    ) -> None:
        super().__init__(uri, settings)
        self.host, self.repo, self.ref = parse(uri)
        try:
            from agent.images.auth import AnonymousProvider, BasicProvider
            from agent.images.registry import Registry
            from agent.images.settings import ImageSettings
            from agent.images.trust import Binding as RegistryBinding
        except ImportError as exc:  # pragma: no cover - the images package ships with us
            raise ArtifactError(
                f"{self.safe_uri}: the OCI registry client is not available") from exc
        login = creds.for_registry(self.host, self.safe_uri) if creds else None
        provider: Any = BasicProvider(*login) if login else AnonymousProvider()
        if login and creds is not None:  # a token realm on another host: only a bound one
            provider.binding = RegistryBinding(
                [f"{h}:{p}" if p else h for _, h, p in creds.binding.entries],
                setting="the credentials Secret's 'host' key")
        image_settings = ImageSettings(
            insecure_registries=list(settings.oci_insecure_registries),
            ca_bundle=settings.ca_bundle, retries=min(settings.retries, 20),
            timeout_seconds=settings.timeout_seconds,
        )
        try:
            where = urlsplit("//" + self.host)
            port = where.port
        except ValueError as exc:
            raise ArtifactError(f"{self.safe_uri}: bad registry address {self.host!r}") from exc
        EgressPolicy.of(settings).check_host(where.hostname or self.host, port, self.safe_uri)
        session = guarded_session(settings)  # the token realm is fetched through it too
        self.registry = self._wrap(lambda: Registry(self.host, image_settings, provider,
                                                    session=session))
        self._stack.callback(self.registry.session.close)
        self.layers = self._layers()

    def _wrap(self, fn: Any) -> Any:
        try:
            return fn()
        except ArtifactError:
            raise
        except AgentError as exc:  # RegistryError: already names the registry, never a secret
            err = TransientArtifactError if exc.transient else ArtifactError
            text = (str(exc).replace("images.ca_bundle", "artifacts.ca_bundle (--ca-bundle)")
                    .replace("images.insecure_registries", "artifacts.oci_insecure_registries")
                    .replace("(images.credentials.hosts, images.base_credentials.hosts)",
                             "(model.credentials_secret)")
                    .replace(" (or list the registry in images.skip_tls_verify_registries)", ""))
            raise err(f"{self.safe_uri}: {text}") from exc

    def _layers(self) -> list[dict[str, Any]]:
        manifest = self._wrap(lambda: self.registry.get_manifest(self.repo, self.ref))
        if manifest is None:
            raise ArtifactError(
                f"{self.safe_uri}: not found in the registry (check repository and tag)")
        if manifest.is_index:
            manifest = self._wrap(lambda: self.registry.resolve_image(self.repo, self.ref))
        layers = list(manifest.data.get("layers", []))
        if not layers:
            raise ArtifactError(f"{self.safe_uri}: the manifest has no layers")
        total = sum(int(layer.get("size", 0)) for layer in layers)
        if total > self.settings.max_archive_bytes:
            raise ArtifactError(
                f"{self.safe_uri}: the layers add up to {total} bytes, more than "
                f"artifacts.max_archive_bytes ({self.settings.max_archive_bytes})")
        return layers

    @property
    def digest(self) -> str:
        return listing_digest(
            (f"{i:04d}/{layer.get('annotations', {}).get(TITLE, '')}",
             int(layer.get("size", 0)), str(layer["digest"]))
            for i, layer in enumerate(self.layers)
        )

    def _open_blob(self, digest: str, size: int) -> Any:
        def open_at(offset: int) -> Any:
            headers = {"Range": f"bytes={offset}-"} if offset else None
            resp = self._wrap(lambda: self.registry.request(
                "GET", f"/v2/{self.repo}/blobs/{digest}", [f"repository:{self.repo}:pull"],
                ok=(200, 206), what=f"get blob {digest[:19]}", headers=headers, stream=True,
            ))
            if offset and resp.status_code != 206:
                resp.close()
                raise ArtifactError(f"{self.safe_uri}: the registry ignored the byte range")
            return _Raw(resp)

        def classify(exc: BaseException) -> ArtifactError:
            from agent.artifacts.http import classify as http_classify

            return http_classify(exc, self.safe_uri)

        return buffered(ResumableStream(
            f"{self.safe_uri} blob {digest[:19]}", open_at, size, self.settings, classify
        ))

    def _download(self, index: int, layer: dict[str, Any]) -> Path:
        digest, size = str(layer["digest"]), int(layer.get("size", 0))
        target = self.tempdir() / f"layer-{index:04d}.tar"
        check = hashlib.sha256()
        with self._open_blob(digest, size) as src, target.open("wb") as out:
            while chunk := src.read(CHUNK):
                check.update(chunk)
                out.write(chunk)
        if digest.startswith("sha256:") and "sha256:" + check.hexdigest() != digest:
            raise ArtifactError(f"{self.safe_uri}: layer {digest} is corrupt (digest mismatch)")
        return target

    def _list(self) -> list[ModelFile]:
        downloaded: list[Path] = []
        plain: list[ModelFile] = []
        for i, layer in enumerate(self.layers):
            media = str(layer.get("mediaType", ""))
            title = layer.get("annotations", {}).get(TITLE)
            if not is_tar(media):
                if not title:
                    raise ArtifactError(
                        f"{self.safe_uri}: layer {layer['digest']} ({media}) is neither a tar nor "
                        f"a titled file ({TITLE})"
                    )
                digest, size = str(layer["digest"]), int(layer.get("size", 0))
                plain.append(ModelFile(
                    title, size, 0o644, content_id=digest,
                    checksum=("sha256", digest.removeprefix("sha256:"))
                    if digest.startswith("sha256:") else None,
                    opener=lambda d=digest, s=size: self._open_blob(d, s),  # type: ignore[misc]
                ))
                continue
            downloaded.append(self._download(i, layer))
        # a modelcar: only /models matters (the base image's absolute links are ignored);
        # otherwise every member of every layer, under the strict archive rules
        label = self.safe_uri
        scanned = [(p, archive.scan(p, "layer.tar", self.settings, label, select=_models))
                   for p in downloaded]
        if not any(members for _, members in scanned):
            scanned = [(p, archive.scan(p, "layer.tar", self.settings, label))
                       for p in downloaded]
        merged: dict[str, ModelFile] = {}
        for path, members in scanned:
            # each layer is unpacked once, in one pass; the files are then read from disk
            dest = path.with_suffix(".d")
            dest.mkdir()
            archive.unpack(path, "layer.tar", members, dest, self.settings, label)
            path.unlink()
            for f in archive.disk_files(dest, members, "oci-layer-member"):
                base = posixpath.basename(f.path)
                if base.startswith(".wh."):
                    _whiteout(merged, posixpath.dirname(f.path), base[len(".wh."):])
                    continue
                merged[f.path] = f
        for f in plain:
            merged[f.path] = f
        return list(merged.values())


def _models(name: str) -> str | None:
    """`models/x` -> `x`; anything else is not part of a modelcar's model."""
    if name.startswith(MODELS_DIR + "/"):
        return name[len(MODELS_DIR) + 1:]
    return None


def _whiteout(merged: dict[str, ModelFile], directory: str, target: str) -> None:
    prefix = f"{directory}/" if directory else ""
    if target == ".wh..opq":  # opaque directory: drop what lower layers had in it
        for key in [k for k in merged if k.startswith(prefix)]:
            del merged[key]
        return
    victim = prefix + target
    for key in [k for k in merged if k == victim or k.startswith(victim + "/")]:
        del merged[key]


class _Raw:
    def __init__(self, resp: Any) -> None:
        self.resp = resp

    def read(self, n: int) -> bytes:
        return bytes(self.resp.raw.read(n, decode_content=False))

    def close(self) -> None:
        self.resp.close()

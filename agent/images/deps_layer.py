"""A model's requirements.txt as a dependency layer, built once and shared by every model.

The direct builder serves a model whose requirements the base image lacks without a
Dockerfile build: pip installs the missing requirements *for the base image's Python and
platform* (wheels only: no compiler, no build code runs in the agent) into a directory
that becomes one layer, put on `PYTHONPATH`. The base image's own packages are kept: a
requirement the base already has is left to it (a version mismatch is reported), and
pip is constrained to the base's versions of everything else, so the layer adds
packages and never replaces one.

The layer is keyed by the normalised missing requirements, the base manifest digest, the
Python version, the platform tags, the index and the compression. It is pushed once to
the generated-image repository with a manifest tagged `deps-<key>` (its cache entry);
every later model with the same requirements on the same base finds the tag with one
request and uploads nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from agent.errors import InvalidActionError, RegistryError
from agent.images.base_python import BasePython, survey
from agent.images.content import Destination
from agent.images.layer import (
    DirectorySource,
    LayerResult,
    LayerSink,
    ModelSourceLike,
    layer_media_type,
    write_model_tar,
)
from agent.images.naming import parse_reference
from agent.images.oci import OCI_MANIFEST
from agent.images.pip_install import install
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import DependencySettings, ImageSettings
from agent.images.upload import copy_blob

log = logging.getLogger(__name__)

RECIPE = "deps/1"
ROOT = "/opt/management-agent/deps"
CONFIG_TYPE = "application/vnd.management-agent.dependencies.config.v1+json"
ANNOTATION = "io.management-agent.dependencies"
MAX_REQUIREMENTS_BYTES = 64 * 1024


@dataclass(frozen=True)
class DependencyLayer:
    """A pushed (or found) dependency layer and where its packages are."""

    layer: LayerResult
    path: str  # the directory to put on PYTHONPATH
    requirements: tuple[str, ...]
    reused: bool


def read_requirements(source: ModelSourceLike, name: str) -> list[Requirement] | None:
    """The model's requirements (PEP 508 lines only); None when it has no such file.

    pip options (`-r`, `--index-url`, `-e`) and URL requirements are refused: the
    model chooses *what* to install, never where from.
    """
    item = next((f for f in source.files() if f.path == name), None)
    if item is None:
        return None
    if item.size > MAX_REQUIREMENTS_BYTES:
        raise InvalidActionError(f"the model's {name} is larger than 64 KiB")
    with item.open() as stream:
        text = stream.read(MAX_REQUIREMENTS_BYTES).decode("utf-8", "replace")
    found = []
    for number, raw in enumerate(text.replace("\\\n", "").splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            raise InvalidActionError(
                f"the model's {name}, line {number}: pip options ({line.split()[0]}) are not "
                "accepted; the agent's images.dependencies settings choose the index")
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidActionError(f"the model's {name}, line {number}: {exc}") from None
        if requirement.url:
            raise InvalidActionError(
                f"the model's {name}, line {number}: URL requirements ({requirement.name} @ …) "
                "are not accepted; publish the package to the configured index")
        found.append(requirement)
    return found


def _marker_env(base: BasePython) -> dict[str, str]:
    return {"python_version": base.version, "python_full_version": f"{base.version}.0",
            "platform_machine": base.arch, "sys_platform": "linux", "platform_system": "Linux",
            "os_name": "posix", "implementation_name": "cpython",
            "platform_python_implementation": "CPython"}


def pip_line(requirement: Requirement) -> str:
    """`name[extras]specifier` only: the marker (already evaluated for the base) never
    reaches pip, which would split its values at ` -` into options and evaluate it
    against the agent's Python."""
    extras = f"[{','.join(sorted(canonicalize_name(e) for e in requirement.extras))}]" \
        if requirement.extras else ""
    return f"{canonicalize_name(requirement.name)}{extras}{requirement.specifier}"


def missing_requirements(requirements: list[Requirement], base: BasePython,
                         settings: DependencySettings) -> tuple[list[str], list[str]]:
    """(normalised requirements the base lacks, notes on versions the base differs in)."""
    aliases = {canonicalize_name(k): [canonicalize_name(v) for v in vs]
               for k, vs in settings.provided_by.items()}
    missing, notes = set(), []
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate(_marker_env(base)):
            continue
        name = canonicalize_name(requirement.name)
        have = next(((n, base.distributions[n]) for n in [name, *aliases.get(name, [])]
                     if n in base.distributions), None)
        if have is None:
            missing.add(pip_line(requirement))
        elif have[1] and not requirement.specifier.contains(have[1], prereleases=True):
            notes.append(f"{requirement} wanted, the base image's {have[0]} {have[1]} is used")
    return sorted(missing), notes


def layer_key(missing: list[str], base_digest: str, base: BasePython,
              settings: ImageSettings) -> str:
    deps = settings.dependencies
    text = json.dumps([RECIPE, missing, base_digest, base.version, base.platforms(),
                       deps.index_url, deps.extra_index_urls, settings.compression,
                       settings.compression_level, settings.gzip_store_incompressible])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def find_cached(registry: Registry, repository: str, tag: str) -> DependencyLayer | None:
    """The cache entry `deps-<key>`, when an earlier build pushed it."""
    manifest = registry.get_manifest(repository, tag)
    if manifest is None:
        return None
    foreign = RegistryError(f"{registry.host}/{repository}:{tag} is not a dependency layer "
                            "cache entry of this agent: delete that tag")
    try:
        layers = manifest.data["layers"]
        layer = layers[0]
        info = json.loads(layer["annotations"][ANNOTATION])
        result = LayerResult(str(layer["digest"]), str(info["diff_id"]), int(layer["size"]),
                             str(layer["mediaType"]), int(info.get("uncompressed_size", 0)))
        path, requirements = info["path"], info.get("requirements", [])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise foreign from None
    if (len(layers) != 1 or not isinstance(path, str) or not path.startswith(ROOT + "/")
            or not isinstance(requirements, list)
            or not re.fullmatch(r"sha256:[0-9a-f]{64}", result.digest)
            or not re.fullmatch(r"sha256:[0-9a-f]{64}", result.diff_id)):
        raise foreign
    return DependencyLayer(result, path, tuple(str(r) for r in requirements), True)


def push_layer(registry: Registry, repository: str, tag: str, site: Path, path: str,
               missing: list[str], settings: ImageSettings) -> DependencyLayer:
    """Tar `site` at `path`, push it, and tag the cache entry that names it."""
    upload = registry.start_upload(repository)
    sink = LayerSink(upload, settings.compression, settings.compression_level,
                     adaptive=settings.gzip_store_incompressible)
    try:
        files: list[Any] = list(DirectorySource(site).files())
        write_model_tar(files, path, sink)
        digest, diff_id = sink.close()
        upload.finish(digest)
    except BaseException:
        upload.cancel()
        raise
    layer = LayerResult(digest, diff_id, sink.compressed_size,
                        layer_media_type(settings.compression), sink.size)
    info = {"path": path, "diff_id": diff_id, "uncompressed_size": sink.size,
            "requirements": missing}
    config = json.dumps({"recipe": RECIPE, **info}, separators=(",", ":")).encode()
    registry.push_blob(repository, config)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CONFIG_TYPE, "digest": sha256_digest(config),
                           "size": len(config)},
                "layers": [{"mediaType": layer.media_type, "digest": digest,
                            "size": layer.size,
                            "annotations": {ANNOTATION: json.dumps(info)}}]}
    registry.put_manifest(repository, tag, json.dumps(manifest).encode(), OCI_MANIFEST)
    return DependencyLayer(layer, path, tuple(missing), False)


def dependency_layer(registry: Registry, cache_repository: str, base: BasePython,
                     base_digest: str, missing: list[str], settings: ImageSettings,
                     report: Callable[..., Any]) -> DependencyLayer:
    """The layer holding `missing` for `base`: found by its tag, else installed and pushed."""
    key = layer_key(missing, base_digest, base, settings)
    tag = f"deps-{key}"
    found = find_cached(registry, cache_repository, tag)
    if found is not None:
        report(f"dependency layer reused: {cache_repository}:{tag}", dependencies=missing)
        return found
    report(f"installing {', '.join(missing)} for Python {base.version} "
           f"({base.platforms()[0]}) into a dependency layer", dependencies=missing)
    with tempfile.TemporaryDirectory(prefix="deps-") as work:
        site = Path(work) / "site"
        site.mkdir()
        install(missing, base, settings.dependencies, site, settings.ca_bundle)
        built = push_layer(registry, cache_repository, tag, site, f"{ROOT}/{key[:16]}",
                           missing, settings)
    log.info("dependency layer %s (%d bytes) pushed as %s:%s", built.layer.digest[:19],
             built.layer.size, cache_repository, tag)
    return built


def _mount(registry: Registry, repository: str, digest: str, from_repository: str) -> None:
    upload = registry.mount_blob(repository, digest, from_repository)
    if upload is not None:  # not mounted: copied, its digest checked
        copy_blob(registry.stream_blob(from_repository, digest),
                  f"{registry.host}/{from_repository}", digest, upload)


def for_model(dest: Destination, source: ModelSourceLike, settings: ImageSettings,
              report: Callable[..., Any]) -> DependencyLayer | None:
    """The dependency layer of the model's requirements file; None when nothing is missing."""
    deps = settings.dependencies
    requirements = read_requirements(source, deps.requirements_path) if deps.enabled else None
    if not requirements:
        return None
    registry, base_registry, manifest = dest.registry, dest.base_registry, dest.base_manifest
    assert registry is not None and base_registry is not None and manifest is not None
    base = survey(base_registry, dest.base.repository, manifest, deps)
    missing, notes = missing_requirements(requirements, base, deps)
    for note in notes:
        report(f"requirement left to the base image: {note}")
    if not missing:
        return None
    assert settings.generated_image_repository is not None
    cache = parse_reference(settings.generated_image_repository).repository
    target = dest.ref.repository
    if cache != target:
        registry.provider.ensure_repository(registry.host, cache)
    found = dependency_layer(registry, cache, base, manifest.digest, missing, settings, report)
    if cache != target:
        _mount(registry, target, found.layer.digest, cache)
    return found

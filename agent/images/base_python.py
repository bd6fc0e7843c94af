"""What Python a base image runs: version, platform, glibc and installed distributions.

Read from the image itself, so that a dependency layer is built for the interpreter the
server really runs and holds only what the base lacks: the config gives the architecture
and `PYTHON_VERSION`/`PYTHONPATH`; a streamed listing of the layers (names only, plus
dpkg's status for libc6) gives `python3.X`, the `*.dist-info` directories and glibc.
A survey is cached per base manifest digest: the same base is read once per process.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name

from agent.errors import BuildError
from agent.images.bodies import MAX_CONFIG_BYTES, verified
from agent.images.oci import Manifest
from agent.images.registry import Registry
from agent.images.settings import DependencySettings

ARCHES = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x"}
_PYTHON_DIR = re.compile(r"^usr/(?:local/)?(?:lib|bin)/python(3\.\d+)(?:/|$)")
_SITE_DIRS = ("site-packages", "dist-packages")
_CACHE: dict[str, BasePython] = {}
_CACHE_SIZE = 8
MAX_DPKG_BYTES = 4 * 1024 * 1024  # Debian's status file is ~1 MiB with a large package set


@dataclass(frozen=True)
class BasePython:
    """The base image's Python as pip needs it to pick wheels."""

    version: str  # "3.11"
    arch: str  # "x86_64"
    glibc: str  # "2.36"
    distributions: dict[str, str]  # canonical name -> version
    pythonpath: str  # the base's PYTHONPATH ("" when unset)

    def platforms(self) -> list[str]:
        """manylinux tags up to the base's glibc (pip adds the older aliases itself)."""
        minor = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.arch}"]
        if minor >= 17:
            tags.append(f"manylinux2014_{self.arch}")
        return tags


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (a streamed blob)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _open_layer(registry: Registry, repository: str, descriptor: dict[str, Any]
                ) -> tuple[tarfile.TarFile, io.BufferedReader[_ChunkReader]]:
    """(the layer as a streamed tar, its raw stream): read the stream to its end afterwards,
    so that the blob's digest is checked."""
    digest = descriptor["digest"]
    stream = io.BufferedReader(_ChunkReader(verified(
        registry.stream_blob(repository, digest), digest, f"{registry.host}/{repository}")),
        1024 * 1024)
    if descriptor.get("mediaType", "").endswith("zstd"):
        try:
            import zstandard
        except ImportError:
            raise BuildError("the base image has zstd layers: install management-agent[zstd] to "
                             "read it for dependency layers") from None
        return tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(stream),
                            mode="r|"), stream
    return tarfile.open(fileobj=stream, mode="r|*"), stream


def _dist(directory: str) -> tuple[str, str] | None:
    """('name', 'version') of `name-version.dist-info` / `name-version[-pyX].egg-info`."""
    stem, _, suffix = directory.rpartition(".")
    if suffix not in ("dist-info", "egg-info"):
        return None
    parts = stem.split("-")
    return (canonicalize_name(parts[0]), parts[1]) if len(parts) >= 2 else None


class _Listing:
    """What the layers' file names say, applied layer by layer (whiteouts included)."""

    def __init__(self, pythonpath: list[str]) -> None:
        self.pythonpath = {p.strip("/") for p in pythonpath if p}
        self.pythons: set[str] = set()
        self.dists: dict[str, tuple[str, str]] = {}  # dist dir path -> (name, version)
        self.libc6: str | None = None

    def _in_path(self, parent: str) -> bool:
        return parent.rsplit("/", 1)[-1] in _SITE_DIRS or parent in self.pythonpath

    def add(self, tar: Any) -> None:
        for member in tar:
            name = member.name.removeprefix("./").lstrip("/")
            parent, _, base = name.rpartition("/")
            if base.startswith(".wh."):
                gone = f"{parent}/{base[4:]}".lstrip("/")
                self.dists = {k: v for k, v in self.dists.items()
                              if k != gone and not k.startswith(gone + "/")}
                continue
            if match := _PYTHON_DIR.match(name):
                self.pythons.add(match.group(1))
            if (found := _dist(base)) is not None and self._in_path(parent):
                self.dists[name] = found
            elif name == "var/lib/dpkg/status" or (
                    name.startswith("var/lib/dpkg/status.d/") and "libc6" in base):
                self._read_dpkg(tar.extractfile(member))

    def _read_dpkg(self, stream: Any) -> None:
        if stream is None:
            return
        data = stream.read(MAX_DPKG_BYTES + 1)
        if len(data) > MAX_DPKG_BYTES:
            raise BuildError("the base image's dpkg status is larger than 4 MiB, more than the "
                             "agent reads to find glibc: use a base image with fewer Debian "
                             "packages, or images.builder=kaniko")
        text = data.decode("utf-8", "replace")
        for record in text.split("\n\n"):
            if re.search(r"^Package: libc6$", record, re.M):
                version = re.search(r"^Version: (\d+\.\d+)", record, re.M)
                if version:
                    self.libc6 = version.group(1)


def survey(registry: Registry, repository: str, manifest: Manifest,
           settings: DependencySettings) -> BasePython:
    """Read the base image's Python (cached per manifest digest)."""
    if (cached := _CACHE.get(manifest.digest)) is not None:
        return cached
    descriptor = manifest.data["config"]
    if int(descriptor.get("size", 0)) > MAX_CONFIG_BYTES:
        raise BuildError(f"the base image's config is larger than "
                         f"{MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    config = json.loads(registry.get_blob(repository, descriptor["digest"]))
    env = dict(item.split("=", 1) for item in (config.get("config") or {}).get("Env") or []
               if "=" in item)
    pythonpath = env.get("PYTHONPATH", "")
    listing = _Listing(pythonpath.split(":"))
    for descriptor in manifest.data.get("layers", []):
        tar, stream = _open_layer(registry, repository, descriptor)
        with tar:
            listing.add(tar)
        while stream.read(1024 * 1024):  # the rest (padding): the digest covers every byte
            pass
    declared = re.match(r"^(3\.\d+)", env.get("PYTHON_VERSION", ""))
    version = (declared.group(1) if declared else None) or settings.python_version
    if version is None and len(listing.pythons) == 1:
        version = next(iter(listing.pythons))
    if version is None:
        found = ", ".join(sorted(listing.pythons)) or "none"
        raise BuildError(
            f"cannot tell which Python the base image runs (found: {found}): set "
            "images.dependencies.python_version, or give the image a PYTHON_VERSION env")
    arch = ARCHES.get(config.get("architecture", "amd64"))
    if arch is None:
        raise BuildError(f"no manylinux wheels for the base image's architecture "
                         f"{config.get('architecture')!r}")
    result = BasePython(version, arch, listing.libc6 or settings.glibc_version,
                        dict(listing.dists.values()), pythonpath)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[manifest.digest] = result
    return result

"""A hostile registry cannot fill the agent's memory or pass off content as another digest.

A deployment may name any registry (`model.image`, an `oci://` model, a server
profile's base image), so the registry client caps what it reads for a manifest
(4 MiB, the distribution registry's own limit) and for an image config (16 MiB)
while the body streams, and checks every digest it was asked for. The registry
here is the recording endpoint of `conftest.py`: a real registry refuses to store
what these tests need it to serve, so it could not play the attacker.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable

import pytest

from agent.errors import RegistryError
from agent.images.bodies import MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES
from agent.images.registry import Registry
from agent.images.settings import ImageSettings
from tests.security.conftest import Endpoint

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _registry(endpoint: Callable[..., Endpoint]) -> tuple[Endpoint, Registry]:
    ep = endpoint()
    ep.routes["/v2/"] = (200, {}, b"{}")
    return ep, Registry(ep.host, ImageSettings(insecure_registries=[ep.host]))


def test_an_endless_manifest_is_refused_at_the_cap(endpoint: Callable[..., Endpoint]) -> None:
    ep, registry = _registry(endpoint)
    ep.routes["/v2/evil/manifests/latest"] = (200, {"Content-Type": MANIFEST},
                                              8 * MAX_MANIFEST_BYTES)  # streamed, no length
    with pytest.raises(RegistryError, match=r"manifest .*/evil:latest: larger than 4 MiB"):
        registry.get_manifest("evil", "latest")


def test_a_manifest_asked_for_by_digest_must_have_that_digest(
        endpoint: Callable[..., Endpoint]) -> None:
    ep, registry = _registry(endpoint)
    honest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "layers": []}).encode()
    digest = "sha256:" + hashlib.sha256(honest).hexdigest()
    swapped = honest.replace(b'"layers": []', b'"layers": [{"digest": "sha256:00"}]')
    ep.routes[f"/v2/evil/manifests/{digest}"] = (200, {"Content-Type": MANIFEST}, swapped)
    with pytest.raises(RegistryError, match="does not match its digest"):
        registry.get_manifest("evil", digest)
    ep.routes[f"/v2/evil/manifests/{digest}"] = (200, {"Content-Type": MANIFEST}, honest)
    found = registry.get_manifest("evil", digest)
    assert found is not None and found.digest == digest


def test_an_oversized_config_blob_is_refused(endpoint: Callable[..., Endpoint]) -> None:
    ep, registry = _registry(endpoint)
    digest = "sha256:" + "ab" * 32
    ep.routes[f"/v2/evil/blobs/{digest}"] = (200, {}, MAX_CONFIG_BYTES + 1)
    with pytest.raises(RegistryError, match="larger than 16 MiB"):
        registry.get_blob("evil", digest)


def test_a_base_layer_that_is_not_the_one_its_manifest_names_fails_the_survey(
        endpoint: Callable[..., Endpoint]) -> None:
    """What the dependency-layer planner reads of a base image (its Python and packages,
    from the layers' file names) is checked like any blob: a substituted layer fails."""
    from agent.images.base_python import survey
    from agent.images.oci import Manifest
    from agent.images.settings import DependencySettings

    ep, registry = _registry(endpoint)
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("usr/local/lib/python3.11/site-packages/numpy-2.0.0.dist-info")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PYTHON_VERSION=3.11.9"]}}).encode()

    def manifest(layer_digest: str) -> Manifest:
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        ep.routes[f"/v2/base/blobs/{config_digest}"] = (200, {}, config)
        ep.routes[f"/v2/base/blobs/{layer_digest}"] = (200, {}, layer.getvalue())
        raw = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
            "size": len(config)}, "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                "size": len(layer.getvalue())}]}).encode()
        return Manifest(raw, MANIFEST, "sha256:" + hashlib.sha256(raw).hexdigest())

    claimed = "sha256:" + hashlib.sha256(b"another layer").hexdigest()
    with pytest.raises(RegistryError, match=f"blob {claimed} from .*/base is corrupt"):
        survey(registry, "base", manifest(claimed), DependencySettings())
    right = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    found = survey(registry, "base", manifest(right), DependencySettings())
    assert found.version == "3.11" and found.distributions.get("numpy") == "2.0.0", found


def test_an_endless_error_body_is_cut_and_named_by_its_status(
        endpoint: Callable[..., Endpoint]) -> None:
    """A 4xx/5xx answer is read for its message only up to 64 KiB (then the connection is
    let go), so an error page cannot fill memory either."""
    ep, registry = _registry(endpoint)
    ep.routes["/v2/evil/manifests/latest"] = (403, {}, 64 * MAX_MANIFEST_BYTES)
    with pytest.raises(RegistryError, match="denied access"):
        registry.get_manifest("evil", "latest")

"""oci:// against a real registry (docker-registry from the harness, or started locally):
a KServe-style modelcar image and an ORAS-style artifact, pushed with our registry client."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError
from tests.fixtures.harness import harness_down

pytestmark = pytest.mark.integration


def _tar(entries: list[tuple[str, bytes | None, bytes, str]], gz: bool = True) -> bytes:
    """entries: (name, data or None, tar type, linkname)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if gz else raw


def _push(host: str, repo: str, tag: str, layers: list[tuple[bytes, str, dict[str, str]]],
          artifact_type: str | None = None) -> str:
    from agent.images.registry import Registry
    from agent.images.settings import ImageSettings

    registry = Registry(host, ImageSettings(insecure_registries=[host]))
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    descriptors = []
    for data, media, notes in layers:
        digest = registry.push_blob(repo, data)
        desc: dict[str, Any] = {"mediaType": media, "digest": digest, "size": len(data)}
        if notes:
            desc["annotations"] = notes
        descriptors.append(desc)
    config_digest = registry.push_blob(repo, config)
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": descriptors,
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    raw = json.dumps(manifest).encode()
    return registry.put_manifest(repo, tag, raw, manifest["mediaType"])


GZ = "application/vnd.oci.image.layer.v1.tar+gzip"


def test_modelcar_image(oci_registry: str, tmp_path: Path) -> None:
    base = _tar([("bin/", None, tarfile.DIRTYPE, ""), ("bin/busybox", b"ELF", tarfile.REGTYPE, ""),
                 ("bin/sh", None, tarfile.SYMTYPE, "/bin/busybox"),
                 ("models/old.txt", b"stale", tarfile.REGTYPE, "")])
    model = _tar([("models/", None, tarfile.DIRTYPE, ""),
                  ("models/model.pkl", b"weights" * 100, tarfile.REGTYPE, ""),
                  ("models/sub/conf.json", b"{}", tarfile.REGTYPE, ""),
                  ("models/alias.pkl", None, tarfile.SYMTYPE, "model.pkl"),
                  ("models/hard.pkl", None, tarfile.LNKTYPE, "models/model.pkl"),
                  ("models/.wh.old.txt", b"", tarfile.REGTYPE, "")])
    manifest_digest = _push(oci_registry, "art/modelcar", "v1", [(base, GZ, {}), (model, GZ, {})])
    settings = ArtifactSettings(oci_insecure_registries=[oci_registry])
    uri = f"oci://{oci_registry}/art/modelcar:v1"
    with open_model(uri, settings) as src:
        digest = src.digest
        assert [f.path for f in src.files()] == ["alias.pkl", "hard.pkl", "model.pkl",
                                                  "sub/conf.json"]
    assert fetch_model(uri, tmp_path / "d", settings, expected_digest=digest) == digest
    assert (tmp_path / "d" / "model.pkl").read_bytes() == b"weights" * 100
    assert (tmp_path / "d" / "alias.pkl").read_bytes() == b"weights" * 100
    by_digest = f"oci://{oci_registry}/art/modelcar@{manifest_digest}"
    with open_model(by_digest, settings) as src:
        assert src.digest == digest


def test_oras_style_artifact(oci_registry: str, tmp_path: Path) -> None:
    onnx = b"onnx-bytes" * 50
    tokenizer = b'{"vocab": []}'
    _push(oci_registry, "art/oras", "v1", [
        (onnx, "application/vnd.onnx", {"org.opencontainers.image.title": "model.onnx"}),
        (tokenizer, "application/json", {"org.opencontainers.image.title": "tokenizer.json"}),
    ], artifact_type="application/vnd.example.model")
    settings = ArtifactSettings(oci_insecure_registries=[oci_registry])
    uri = f"oci://{oci_registry}/art/oras:v1"
    with open_model(uri, settings) as src:
        files = {f.path: f for f in src.files()}
        assert files["model.onnx"].content_id == "sha256:" + hashlib.sha256(onnx).hexdigest()
    fetch_model(uri, tmp_path / "d", settings)
    assert (tmp_path / "d" / "model.onnx").read_bytes() == onnx
    assert (tmp_path / "d" / "tokenizer.json").read_bytes() == tokenizer


def test_hostile_artifact_and_missing(oci_registry: str, tmp_path: Path) -> None:
    evil = _tar([("model.bin", b"x", tarfile.REGTYPE, ""),
                 ("link", None, tarfile.SYMTYPE, "/etc/passwd")])
    _push(oci_registry, "art/evil", "v1", [(evil, GZ, {})])
    settings = ArtifactSettings(oci_insecure_registries=[oci_registry])
    with pytest.raises(ArtifactError, match="link"):
        fetch_model(f"oci://{oci_registry}/art/evil:v1", tmp_path / "d", settings)
    assert not (tmp_path / "d").exists()
    with pytest.raises(ArtifactError, match="not found"):
        open_model(f"oci://{oci_registry}/art/missing:v9", settings)


@pytest.mark.parametrize("kind", ["TLS", "TOKEN"])
def test_private_registry_with_ca_and_login(kind: str, tmp_path: Path,
                                            artifacts_harness_vars: dict[str, str]) -> None:
    """The harness's TLS registries (basic auth / bearer token service, private CA)."""
    import base64

    from agent.images.auth import BasicProvider
    from agent.images.registry import Registry
    from agent.images.settings import ImageSettings

    env = artifacts_harness_vars
    host = env.get(f"HARNESS_REGISTRY_{kind}")
    if not host or not env.get("HARNESS_CA_CERT"):
        harness_down("needs the harness TLS registries")
    user, password = env[f"HARNESS_REGISTRY_{kind}_USER"], env[f"HARNESS_REGISTRY_{kind}_PASSWORD"]
    ca = Path(env["HARNESS_CA_CERT"])
    registry = Registry(host, ImageSettings(ca_bundle=ca), BasicProvider(user, password))
    data = b"private-weights" * 10
    digest = registry.push_blob("art/private", data)
    config = registry.push_blob("art/private", b"{}")
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config,
                   "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": digest,
                    "size": len(data),
                    "annotations": {"org.opencontainers.image.title": "w.bin"}}],
    }).encode()
    registry.put_manifest("art/private", "v1", manifest,
                          "application/vnd.oci.image.manifest.v1+json")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    secret = {".dockerconfigjson": json.dumps({"auths": {host: {"auth": auth}}})}
    uri = f"oci://{host}/art/private:v1"
    fetch_model(uri, tmp_path / "d", ArtifactSettings(ca_bundle=ca), secret)
    assert (tmp_path / "d" / "w.bin").read_bytes() == data
    with pytest.raises(ArtifactError) as err:
        open_model(uri, ArtifactSettings(ca_bundle=ca, retries=0),
                   {"username": user, "password": "wrong-password-xyz"})
    assert uri in str(err.value) and "wrong-password-xyz" not in str(err.value)
    with pytest.raises(ArtifactError, match=r"TLS|certificate"):
        open_model(uri, ArtifactSettings(retries=0), secret)

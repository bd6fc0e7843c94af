"""Model artifacts with ModelPack media types, pushed to the harness's real registry.

Checked independently of the agent with skopeo (raw manifests, configs) and
umoci (the model-only image unpacks to the model's files at its root, which is
what an image volume shows), and read back through the agent's OCI fetcher,
including an artifact with the older `vnd.cnai.model.*` media types.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from images_support import Registries, skopeo_tls_args

from agent.artifacts import open_model
from agent.artifacts.settings import ArtifactSettings
from agent.images.layer import DirectorySource
from agent.images.modelpack import ModelArtifact, push_model_artifact
from agent.images.naming import parse_reference
from agent.images.registry import Registry, sha256_digest
from agent.images.settings import ImageSettings, RegistryCredentials

pytestmark = pytest.mark.integration

LABELS = {"io.management-agent.model-id": "churn-v1", "org.opencontainers.image.title": "m"}


def _settings(reg: Registries) -> ImageSettings:
    return ImageSettings(insecure_registries=[reg.plain])


def _push(reg: Registries, model: Path, repo: str) -> tuple[ModelArtifact, list[Any]]:
    events: list[Any] = []
    with DirectorySource(model) as source:
        pushed = push_model_artifact(_settings(reg), parse_reference(f"{reg.plain}/{repo}"),
                                     source, LABELS, lambda m, **kw: events.append((m, kw)))
    return pushed, events


def _raw(ref: str, config: bool = False) -> dict[str, Any]:
    args = ["skopeo", "inspect", "--tls-verify=false", "--config" if config else "--raw"]
    out = subprocess.run([*args, f"docker://{ref}"], check=True, capture_output=True,
                         text=True).stdout
    return dict(json.loads(out))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_model_is_pushed_as_a_modelpack_artifact_and_a_mountable_model_only_image(
        registries: Registries, model_dir: Path, tmp_path: Path) -> None:
    repo = f"models/mp-{uuid.uuid4().hex[:8]}"
    pushed, _ = _push(registries, model_dir, repo)
    assert not pushed.reused and pushed.bytes_uploaded > 300_000

    artifact = _raw(pushed.artifact)
    assert artifact["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert artifact["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    kinds = {layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
             for layer in artifact["layers"]}
    assert kinds == {"MLmodel": "application/vnd.cncf.model.weight.config.v1.tar",
                     "model.bin": "application/vnd.cncf.model.weight.v1.tar",
                     "sub/deeper/weights.npy": "application/vnd.cncf.model.weight.v1.tar",
                     "sub/run.sh": "application/vnd.cncf.model.code.v1.tar"}
    host, _, path = pushed.artifact.partition("/")
    registry = Registry(host, _settings(registries))
    config = json.loads(registry.get_blob(path.split(":")[0], artifact["config"]["digest"]))
    with DirectorySource(model_dir) as source:
        assert config["descriptor"]["revision"] == source.digest
    assert config["config"]["format"] == "mlflow"
    # uncompressed layers: each diff-id is the blob digest
    assert config["modelfs"]["diff_ids"] == [layer["digest"] for layer in artifact["layers"]]

    image = _raw(pushed.volume)
    assert image["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert {layer["mediaType"] for layer in image["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar"}
    assert [layer["digest"] for layer in image["layers"]] == config["modelfs"]["diff_ids"]
    assert pushed.digest == sha256_digest(json.dumps(image, separators=(",", ":")).encode())
    assert _raw(pushed.volume, config=True)["rootfs"]["diff_ids"] == config["modelfs"]["diff_ids"]

    layout, bundle = tmp_path / "layout", tmp_path / "bundle"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{pushed.volume}", f"oci:{layout}:v"], check=True,
                   capture_output=True)
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:v", str(bundle)],
                   check=True, capture_output=True)
    assert _files(bundle / "rootfs") == _files(model_dir)  # the model at the volume's root
    assert (bundle / "rootfs" / "sub" / "run.sh").stat().st_mode & 0o111


def test_repeated_push_of_the_same_model_uploads_nothing(registries: Registries,
                                                         model_dir: Path) -> None:
    repo = f"models/mp-{uuid.uuid4().hex[:8]}"
    first, _ = _push(registries, model_dir, repo)
    again, events = _push(registries, model_dir, repo)
    assert again.reused and again.bytes_uploaded == 0
    assert (again.volume, again.digest) == (first.volume, first.digest)
    assert [m for m, _ in events] == [f"model artifact reused: {first.volume}"]


def test_fetcher_reads_a_modelpack_artifact_with_either_prefix(
        registries: Registries, model_dir: Path, tmp_path: Path) -> None:
    repo = f"models/mp-{uuid.uuid4().hex[:8]}"
    pushed, _ = _push(registries, model_dir, repo)
    settings = ArtifactSettings(oci_insecure_registries=[registries.plain])
    with open_model(f"oci://{pushed.artifact}", settings) as source:
        fetched = {f.path: f.open().read() for f in source.files()}
    assert fetched == _files(model_dir)

    # an artifact of the older CNAI spec: a raw (untarred) weight named by its annotation
    registry = Registry(registries.plain, _settings(registries))
    weights = b"\x00weights" * 1000
    config = json.dumps({"config": {"format": "onnx"}, "modelfs": {
        "type": "layers", "diff_ids": [sha256_digest(weights)]}}).encode()
    for blob in (weights, config):
        registry.push_blob(repo, blob)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.cnai.model.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cnai.model.config.v1+json",
                           "digest": sha256_digest(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.cnai.model.weight.v1.raw",
                            "digest": sha256_digest(weights), "size": len(weights),
                            "annotations": {"org.cnai.model.filepath": "model.onnx"}}]}
    registry.put_manifest(repo, "cnai", json.dumps(manifest).encode(),
                          "application/vnd.oci.image.manifest.v1+json")
    with open_model(f"oci://{registries.plain}/{repo}:cnai", settings) as source:
        assert {f.path: f.open().read() for f in source.files()} == {"model.onnx": weights}


def test_basic_login_without_hosts_is_sent_to_the_generated_repositorys_own_host(
        registries: Registries, model_dir: Path, tmp_path: Path) -> None:
    """The login is bound to `generated_image_repository`'s host, as in image mode: no
    `hosts` needed to push the model artifact there (image-volume pushes used to get 401)."""
    repo = f"models/mp-{uuid.uuid4().hex[:8]}"
    settings = ImageSettings(
        generated_image_repository=f"{registries.tls}/models/generated",
        ca_bundle=registries.ca_cert,
        credentials=RegistryCredentials(provider="basic", username=registries.tls_user,
                                        password=registries.tls_password))
    assert settings.credentials.hosts == []
    with DirectorySource(model_dir) as source:
        pushed = push_model_artifact(settings, parse_reference(f"{registries.tls}/{repo}"),
                                     source, LABELS, lambda *a, **k: None)
    out = subprocess.run(
        ["skopeo", "inspect", *skopeo_tls_args(registries, registries.tls, "",
                                                        tmp_path / "certs"),
         f"--creds={registries.tls_user}:{registries.tls_password}",
         f"docker://{registries.tls}/{repo}:{pushed.volume.rsplit(':', 1)[-1]}"],
        check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["Digest"] == pushed.digest

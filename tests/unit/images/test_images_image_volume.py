"""image-volume mode: when `auto` picks it, how the pod mounts the model, how files are typed.

The rendered objects are validated against the real Kubernetes 1.35 schemas
(`kubernetes_validate`, strict). Pushing and serving are tested against real
servers in tests/integration/images/test_images_modelpack.py and
tests/e2e/test_e2e_image_volume.py.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from pydantic import ValidationError

from agent.errors import InvalidActionError
from agent.images.delivery import (
    DeliveryMode,
    check_delivery,
    delivery_mode,
    mode_of_last_good,
    parse_version,
)
from agent.images.layer import DirectorySource, LayerSink, write_model_tar
from agent.images.modelpack import (
    MAX_FILE_LAYERS,
    file_kind,
    file_path_annotation,
    is_modelpack,
    model_format,
    plan_layers,
)
from agent.model import DeploymentSpec, ModelRef
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.settings import KubernetesSettings

MODEL = ModelRef(id="m1", uri="s3://bucket/model/")
DIGEST = "sha256:" + "ab" * 32
#: what `resolve_image` records in image-volume mode: the tag for humans, the digest pinned
VOLUME = f"reg.example/models:mv-0123456789abcdef0123@{DIGEST}"


@pytest.mark.parametrize(("version", "builder", "expected"), [
    ("1.35", "direct", DeliveryMode.IMAGE_VOLUME),
    ("1.36", "direct", DeliveryMode.IMAGE_VOLUME),
    ("2.0", "direct", DeliveryMode.IMAGE_VOLUME),
    ("1.34", "direct", DeliveryMode.IMAGE),  # ImageVolume beta but off by default
    (None, "direct", DeliveryMode.IMAGE),  # version unknown (filesystem plugin, no access)
    ("1.36", "kaniko", DeliveryMode.IMAGE),  # the agent may not push with Kaniko's identity
    ("1.36", "none", DeliveryMode.STORAGE_INITIALIZER),
])
def test_auto_picks_image_volume_on_clusters_that_mount_them(
        version: str | None, builder: str, expected: DeliveryMode) -> None:
    assert delivery_mode(MODEL, "auto", builder, version) is expected


def test_the_version_gate_is_configurable_and_explicit_modes_ignore_it() -> None:
    assert delivery_mode(MODEL, "auto", "direct", "1.35", "1.36") is DeliveryMode.IMAGE
    assert delivery_mode(MODEL, "image-volume", "direct", None) is DeliveryMode.IMAGE_VOLUME
    assert delivery_mode(ModelRef(id="m", image="reg/srv:1"), "auto", "direct", "1.36") \
        is DeliveryMode.IMAGE  # a ready server image is used as named
    with pytest.raises(ValidationError):
        KubernetesSettings(image_volume_min_version="one.35")


@pytest.mark.parametrize(("text", "parsed"), [
    ("1.35", (1, 35)), ("v1.35.2", (1, 35)), ("1.36+", (1, 36)), ("1.33-eks-abc", (1, 33))])
def test_cluster_versions_of_managed_clusters_parse(text: str, parsed: tuple[int, int]) -> None:
    assert parse_version(text) == parsed


def test_rollback_renders_the_last_good_model_in_the_mode_it_was_delivered_in() -> None:
    assert mode_of_last_good(VOLUME, DeliveryMode.IMAGE) is DeliveryMode.IMAGE_VOLUME
    # recorded before volumes were pinned to their digest
    assert mode_of_last_good("reg.example/models:mv-0123456789abcdef0123", DeliveryMode.IMAGE) \
        is DeliveryMode.IMAGE_VOLUME
    # a digest-pinned server image is not mistaken for a model volume
    assert mode_of_last_good(f"reg:5000/srv@{DIGEST}", DeliveryMode.STORAGE_INITIALIZER) \
        is DeliveryMode.STORAGE_INITIALIZER
    assert mode_of_last_good("reg:5000/models:m-0123", DeliveryMode.IMAGE_VOLUME) \
        is DeliveryMode.IMAGE
    assert mode_of_last_good("reg:5000/srv:1", DeliveryMode.STORAGE_INITIALIZER) \
        is DeliveryMode.STORAGE_INITIALIZER


def test_pod_runs_the_unchanged_profile_image_with_the_model_mounted_read_only() -> None:
    spec = DeploymentSpec(id="d1", model=MODEL)
    settings = KubernetesSettings(namespace="models", model_delivery="image-volume")
    objects = render(spec, settings, "docker.io/seldonio/mlserver:1.7.1", "env-1",
                     mode=DeliveryMode.IMAGE_VOLUME, model_volume=VOLUME)
    for obj in objects:
        kubernetes_validate.validate(obj, "1.35.0", strict=True)
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod or not pod["initContainers"]
    # by digest: whoever may push a tag to the repository cannot swap the mounted model
    assert pod["volumes"] == [{"name": "model", "image": {
        "reference": f"reg.example/models@{DIGEST}", "pullPolicy": "IfNotPresent"}}]
    server = pod["containers"][0]
    assert server["image"] == "docker.io/seldonio/mlserver:1.7.1"
    assert {"name": "model", "mountPath": "/mnt/models", "readOnly": True} in \
        server["volumeMounts"]
    assert {"name": "MODEL_PATH", "value": "/mnt/models"} in server["env"]


def test_image_volume_mode_needs_the_pushed_reference_and_a_base_image() -> None:
    spec = DeploymentSpec(id="d1", model=MODEL)
    settings = KubernetesSettings(model_delivery="image-volume")
    with pytest.raises(InvalidActionError, match="image reference"):
        render(spec, settings, "srv:1", "env-1", mode=DeliveryMode.IMAGE_VOLUME)
    with pytest.raises(InvalidActionError, match="no base image"):
        check_delivery(spec, DeliveryMode.IMAGE_VOLUME, None, None)
    check_delivery(spec, DeliveryMode.IMAGE_VOLUME, "srv:1", None)  # no agent image needed


@pytest.mark.parametrize(("path", "kind"), [
    ("model.joblib", "weight"), ("sub/model.safetensors", "weight"), ("model.json", "weight"),
    ("MLmodel", "weight.config"), ("requirements.txt", "weight.config"),
    ("tokenizer.json", "weight.config"), ("README.md", "doc"), ("LICENSE", "doc"),
    ("code/predict.py", "code")])
def test_files_get_modelpack_layer_kinds(path: str, kind: str) -> None:
    assert file_kind(path) == kind


def test_model_format_and_both_media_type_prefixes() -> None:
    assert model_format(["MLmodel", "model.pkl"]) == "mlflow"
    assert model_format(["model.joblib"]) == "joblib"
    assert model_format(["model.json"]) == "xgboost"
    assert model_format(["notes.txt"]) == "unknown"
    assert is_modelpack("application/vnd.cncf.model.weight.v1.tar")
    assert is_modelpack("application/vnd.cnai.model.manifest.v1+json")
    assert not is_modelpack("application/vnd.oci.image.layer.v1.tar")
    assert file_path_annotation({"org.cnai.model.filepath": "w.bin"}) == "w.bin"
    assert file_path_annotation({"other": "x"}) is None


def _layer_digests(model: Path) -> list[tuple[str, int, str]]:
    """(kind, file count, tar digest) of each layer `push_model_artifact` would push."""
    out = []
    with DirectorySource(model) as source:
        files = sorted(source.files(), key=lambda f: f.path)
        for kind, group in plan_layers(files):
            sink = LayerSink(None, "none", None)
            write_model_tar(group, "", sink)
            out.append((kind, len(group), sink.close()[0]))
    return out


def test_a_model_of_500_files_is_pushed_in_at_most_64_layers_with_stable_digests(
        tmp_path: Path) -> None:
    """Hundreds of layers fail to mount (overlayfs stacks ~128 at most; containerd and
    CRI-O refuse earlier): the files past the cap share layers, deterministically."""
    model = tmp_path / "model"
    (model / "shards").mkdir(parents=True)
    for i in range(490):
        (model / "shards" / f"part-{i:03}.bin").write_bytes(b"w" * (i + 1))
    for name in ("MLmodel", "conda.yaml", "README.md", "LICENSE", "predict.py", "a.json",
                 "b.json", "run.sh", "notes.md", "x.cfg"):
        (model / name).write_text(name)
    layers = _layer_digests(model)
    assert len(layers) <= MAX_FILE_LAYERS == 64
    assert sum(count for _, count, _ in layers) == 500
    with DirectorySource(model) as source:
        files = sorted(source.files(), key=lambda f: f.path)
    planned = [f.path for _, group in plan_layers(files) for f in group]
    assert sorted(planned) == sorted(f.path for f in files)  # every file exactly once
    # the largest weights keep a layer of their own (shared by the next version)
    own = {group[0].path for kind, group in plan_layers(files) if len(group) == 1}
    assert "shards/part-489.bin" in own and "shards/part-000.bin" not in own
    assert {kind for kind, _, _ in layers} == {"weight", "weight.config", "doc", "code"}
    assert _layer_digests(model) == layers


def test_a_small_model_gets_a_layer_per_file() -> None:
    class F:
        def __init__(self, path: str) -> None:
            self.path, self.size = path, 1
    files = [F(f"w{i:02}.bin") for i in range(MAX_FILE_LAYERS)]
    assert [(k, [f.path for f in g]) for k, g in plan_layers(files)] == \
        [("weight", [f.path]) for f in files]

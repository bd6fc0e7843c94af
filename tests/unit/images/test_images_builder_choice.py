"""Which builder runs: none (ready image), direct, kaniko; configuration errors."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import Settings
from agent.errors import BuildError
from agent.images import BuiltImage, build_model_image, image_labels
from agent.model import DeploymentSpec, ModelRef


def _spec(**model: Any) -> DeploymentSpec:
    return DeploymentSpec(id="d1", model=ModelRef(id="m1", **model))


def test_ready_image_is_used_without_building() -> None:
    """The registry at port 9 refuses: the check is best effort, the image is taken as named."""
    image = "127.0.0.1:9/team/server:1@sha256:" + "c" * 64
    events: list[str] = []
    settings = Settings.model_validate({"images": {"builder": "none",
                                                   "insecure_registries": ["127.0.0.1:9"],
                                                   }})
    built = build_model_image(_spec(image=image), "unused", "/mnt/models", settings,
                              lambda m, *a, **k: events.append(m))
    assert built == BuiltImage(image, "sha256:" + "c" * 64, True)
    assert events == [f"using the deployment's image {image}"]


def test_builder_none_without_image_is_explained() -> None:
    settings = Settings.model_validate({"images": {"builder": "none"}})
    with pytest.raises(BuildError, match=r"spec\.model\.image"):
        build_model_image(_spec(uri="s3://b/k"), "base", "/m", settings, lambda *a, **k: None)


def test_missing_target_repository_is_explained() -> None:
    with pytest.raises(BuildError, match="generated_image_repository"):
        build_model_image(_spec(uri="s3://b/k"), "base", "/m", Settings(), lambda *a, **k: None)


def test_kaniko_needs_a_kube_client() -> None:
    settings = Settings.model_validate({"images": {
        "builder": "kaniko", "generated_image_repository": "r.io/models"}})
    with pytest.raises(BuildError, match="kube="):
        build_model_image(_spec(uri="s3://b/k"), "base", "/m", settings, lambda *a, **k: None)


def test_labels_name_model_and_deployment() -> None:
    labels = image_labels(_spec(uri="s3://user:pw@b/k?X-Amz-Signature=s"))
    assert labels["io.management-agent.model-id"] == "m1"
    assert labels["io.management-agent.deployment-id"] == "d1"
    assert not any("pw" in v or "Signature" in v for v in labels.values())

"""Image references and content-addressed names."""

from __future__ import annotations

import pytest

from agent.errors import BuildError
from agent.images.naming import ImageRef, content_tag, parse_reference, target_repository


@pytest.mark.parametrize(("text", "expected"), [
    ("python:3.11", ImageRef("registry-1.docker.io", "library/python", "3.11")),
    ("docker.io/seldonio/mlserver", ImageRef("registry-1.docker.io", "seldonio/mlserver",
                                             "latest")),
    ("127.0.0.1:5000/base/py:bookworm", ImageRef("127.0.0.1:5000", "base/py", "bookworm")),
    ("localhost/a/b", ImageRef("localhost", "a/b", "latest")),
    ("gcr.io/p/img@sha256:" + "a" * 64, ImageRef("gcr.io", "p/img", None, "sha256:" + "a" * 64)),
    ("r.io:443/x/y:1@sha256:" + "b" * 64, ImageRef("r.io:443", "x/y", "1", "sha256:" + "b" * 64)),
    ("docker://quay.io/org/img:v1", ImageRef("quay.io", "org/img", "v1")),
])
def test_parse_reference(text: str, expected: ImageRef) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize("bad", ["UPPER/case:1", "r.io/x:bad tag", "r.io/x@sha256:zz"])
def test_parse_reference_rejects(bad: str) -> None:
    with pytest.raises(BuildError):
        parse_reference(bad)


def test_reference_round_trip() -> None:
    ref = parse_reference("127.0.0.1:5000/models/x:m-1")
    assert str(ref) == "127.0.0.1:5000/models/x:m-1"
    assert str(ref.with_tag("t2")) == "127.0.0.1:5000/models/x:t2"


def test_content_tag_is_deterministic_and_input_sensitive() -> None:
    tag = content_tag("sha256:aa", "sha256:bb", "direct-1")
    assert tag == content_tag("sha256:aa", "sha256:bb", "direct-1")
    assert tag.startswith("m-") and len(tag) == 22
    assert tag != content_tag("sha256:aa", "sha256:bc", "direct-1")
    assert tag != content_tag("sha256:aa", "sha256:bb", "direct-2")


def test_target_repository_layouts() -> None:
    repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models"
    assert target_repository(repo, "single", "d1", "M 1").repository == "models"
    assert target_repository(repo, "per-model", "d1", "Model_1").repository == "models/model-1"
    assert target_repository(repo, "per-deployment", "d1", "m").repository == "models/d1"


def test_missing_repository_says_which_setting() -> None:
    with pytest.raises(BuildError, match=r"images\.generated_image_repository"):
        target_repository(None, "single", "d", "m")

"""Digest stability: independent of listing order, location and fetch; sensitive to content."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.artifacts.digest import listing_digest, normalize


def allow(root: Path, **settings: Any) -> ArtifactSettings:
    """Settings that let file:// read below root (refused by default)."""
    return ArtifactSettings(file_roots=[root], **settings)


def test_listing_digest_is_order_independent_and_content_sensitive() -> None:
    a = [("a.bin", 3, "x"), ("sub/b.bin", 4, "y")]
    assert listing_digest(a) == listing_digest(list(reversed(a)))
    assert listing_digest(a) != listing_digest([("a.bin", 3, "x"), ("sub/b.bin", 4, "z")])
    assert listing_digest(a) != listing_digest([("a.bin", 3, "x"), ("sub/c.bin", 4, "y")])
    assert listing_digest(a).startswith("sha256:") and len(listing_digest(a)) == 71


def test_listing_digest_framing_is_unambiguous() -> None:
    assert listing_digest([("a", 1, "23")]) != listing_digest([("a", 12, "3")])
    with pytest.raises(ValueError):
        listing_digest([("a\nb", 1, "x")])


def test_normalize() -> None:
    assert normalize("ABC" * 0 + "a" * 64) == "sha256:" + "a" * 64
    with pytest.raises(ValueError):
        normalize("sha256:1234")


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "model.pkl").write_bytes(b"weights" * 100)
    (root / "sub" / "conf.json").write_text("{}")


def test_file_digest_stable_across_copies_and_refetches(tmp_path: Path) -> None:
    settings = allow(tmp_path)
    _tree(tmp_path / "a")
    _tree(tmp_path / "b")
    os.utime(tmp_path / "b" / "model.pkl", (1, 1))  # mtime does not matter
    with open_model(f"file://{tmp_path / 'a'}", settings) as src_a:
        da = src_a.digest
        assert [f.path for f in src_a.files()] == ["model.pkl", "sub/conf.json"]
    with open_model(f"file://{tmp_path / 'b'}", settings) as src_b:
        assert src_b.digest == da
    d1 = fetch_model(f"file://{tmp_path / 'a'}", tmp_path / "out1", settings)
    d2 = fetch_model(f"file://{tmp_path / 'out1'}", tmp_path / "out2", settings)
    assert d1 == d2 == da
    (tmp_path / "b" / "model.pkl").write_bytes(b"other")
    with open_model(f"file://{tmp_path / 'b'}", settings) as src_b:
        assert src_b.digest != da

"""fetch_model semantics on local sources: atomic install, digest checks, pvc://, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError


def allow(root: Path, **settings: Any) -> ArtifactSettings:
    """Settings that let file:// read below root (refused by default)."""
    return ArtifactSettings(file_roots=[root], **settings)


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.pkl").write_bytes(b"weights")
    (root / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (root / "sub" / "run.sh").chmod(0o755)
    return root


def test_fetch_into_new_and_existing_dest(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    dest = tmp_path / "out" / "model"
    digest = fetch_model(f"file://{src}", dest, allow(tmp_path))
    assert (dest / "model.pkl").read_bytes() == b"weights"
    assert (dest / "sub" / "run.sh").stat().st_mode & 0o777 == 0o755
    # an existing (mounted) dest: content replaced, no staging left behind
    (dest / "stale.txt").write_text("old")
    again = fetch_model(f"file://{src}", dest, allow(tmp_path), expected_digest=digest)
    assert again == digest
    assert sorted(p.name for p in dest.iterdir()) == ["model.pkl", "sub"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]


def test_expected_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    with pytest.raises(ArtifactError, match="digest mismatch"):
        fetch_model(f"file://{src}", tmp_path / "d", allow(tmp_path),
                    expected_digest="sha256:" + "0" * 64)
    assert not (tmp_path / "d").exists()
    with pytest.raises(ArtifactError, match="not a sha256"):
        fetch_model(f"file://{src}", tmp_path / "d", allow(tmp_path), expected_digest="md5:1")


def test_single_file(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    fetch_model(f"file://{tmp_path / 'm.onnx'}", tmp_path / "d", allow(tmp_path))
    assert (tmp_path / "d" / "m.onnx").read_bytes() == b"onnx"


def test_pvc(tmp_path: Path) -> None:
    _tree(tmp_path / "claim-a" / "models" / "iris")
    settings = allow(tmp_path, pvc_root=tmp_path)
    with open_model("pvc://claim-a/models/iris", settings) as src:
        assert [f.path for f in src.files()] == ["model.pkl", "sub/run.sh"]
    with pytest.raises(ArtifactError, match="escapes"):
        open_model("pvc://claim-a/../../etc", settings)
    with pytest.raises(ArtifactError, match="PVC mounted"):
        open_model("pvc://claim-b/x", settings)


def test_errors_name_the_uri(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="unknown scheme 'ftp'"):
        open_model("ftp://host/x", allow(tmp_path))
    with pytest.raises(ArtifactError, match="file:///nope"):
        open_model("file:///nope", allow(tmp_path))
    with pytest.raises(ArtifactError, match="absolute"):
        open_model("file://relative/x", allow(tmp_path))


def test_escaping_symlink_in_local_tree_is_skipped(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    (tmp_path / "secret").write_text("s")
    (src / "leak").symlink_to(tmp_path / "secret")
    (src / "alias.pkl").symlink_to(src / "model.pkl")
    with open_model(f"file://{src}", allow(tmp_path)) as source:
        assert [f.path for f in source.files()] == ["alias.pkl", "model.pkl", "sub/run.sh"]

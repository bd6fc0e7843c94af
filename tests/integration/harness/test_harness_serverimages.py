"""The server images' layer recipe: shared distributions dropped, scripts runnable, root-owned.

Filesystem-only checks of `tools/harnesslib/serverimages.py` on small directories laid
out as `pip install --target` leaves them (the e2e serving tests run the real images).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tools.harnesslib import serverimages

pytestmark = pytest.mark.integration


def dist(site: Path, name: str, version: str, files: dict[str, str]) -> None:
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    for path, content in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_text(content)
    record = [f"{path},," for path in files] + [f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_a_layer_keeps_only_what_the_layers_below_lack(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist(site, "numpy", "2.4.6", {"numpy/__init__.py": "x"})
    dist(site, "pandas", "3.1.1", {"pandas/__init__.py": "x"})  # another version below
    dist(site, "xgboost", "3.2.0", {"xgboost/__init__.py": "x"})  # CUDA build: xgboost-cpu
    dist(site, "mlserver", "1.7.1", {"mlserver/__init__.py": "x", "bin/mlserver": "#!x"})
    below = {"numpy": "2.4.6", "pandas": "2.3.3", "xgboost_cpu": "3.2.0"}
    assert serverimages._drop_lower(site, below) == 2
    left = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert left == ["bin/mlserver", "mlserver-1.7.1.dist-info/RECORD", "mlserver/__init__.py",
                    "pandas-3.1.1.dist-info/RECORD", "pandas/__init__.py"]


def test_console_scripts_run_with_the_images_python(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mlserver").write_text("#!/root/.pyenv/versions/3.11.7/bin/python3.11\nimport x\n")
    (bin_dir / "data.txt").write_text("not a script\n")
    serverimages._fix_scripts(bin_dir)
    assert (bin_dir / "mlserver").read_text() == "#!/usr/bin/python3\nimport x\n"
    assert (bin_dir / "data.txt").read_text() == "not a script\n"


def test_layer_tar_is_root_owned_and_readable_by_the_server_user(tmp_path: Path) -> None:
    root = tmp_path / "kserve"
    (root / "site" / "bin").mkdir(parents=True)
    (root / "site" / "mod.py").write_text("x")
    (root / "site" / "mod.py").chmod(0o600)
    (root / "site" / "bin" / "tool").write_text("#!/usr/bin/python3\n")
    (root / "site" / "bin" / "tool").chmod(0o700)
    (root / "serve.py").write_text("x")
    serverimages._write_tar(root, serverimages.LAYERS["kserve"], tmp_path / "layer.tar")
    with tarfile.open(tmp_path / "layer.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert {"opt", "opt/kserve", "opt/kserve/serve.py", "opt/kserve/site/mod.py",
            "opt/kserve/site/bin/tool"} <= set(members)
    assert all((m.uid, m.gid, m.uname) == (0, 0, "root") for m in members.values())
    assert members["opt/kserve/site/mod.py"].mode == 0o644
    assert members["opt/kserve/site/bin/tool"].mode == 0o755


def test_recipe_keys_follow_the_layers_below() -> None:
    """Changing the ml layer's requirements rebuilds every layer above it."""
    before = {name: serverimages.layer_key(name) for name in serverimages.LAYERS}
    ml = serverimages.LAYERS["ml"]
    changed = serverimages.Layer(ml.name, ml.below, (*ml.requirements, "extra==1"))
    original = dict(serverimages.LAYERS)
    try:
        serverimages.LAYERS["ml"] = changed
        after = {name: serverimages.layer_key(name) for name in serverimages.LAYERS}
    finally:
        serverimages.LAYERS.clear()
        serverimages.LAYERS.update(original)
    assert all(before[name] != after[name] for name in before)

"""Real prediction-server images without Docker Hub: MLServer, MLflow's scoring server, KServe.

Built like the base image (debootstrap -> OCI layout in .harness/cache -> skopeo push),
with the Python packages installed on the host (`pip install --target`, wheels only: the
host and the base image are both bookworm + CPython 3.11) into layer directories:

    base (debootstrap) + ml (numpy, scipy, scikit-learn, xgboost-cpu, lightgbm)
      + mlflow (mlflow-skinny, pandas)               -> servers/mlflow
          + mlserver (mlserver + its runtimes)       -> servers/mlserver
      + kserve (kserve + serve.py)                   -> servers/kserve

Each layer holds only the distributions the layers below it lack (same name and
version), so the ML libraries are stored and pushed once. Every layer and the OCI layout
are cached under a key of their recipe: a warm `up` only pushes (seconds). The images
run as user 1000 (no root), as a Pod Security `restricted` namespace demands.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import baseimage
from .install import say
from .layout import Layout
from .procs import run

RECIPE = "1"  # bump to rebuild every layer
USER = "1000:1000"
# Paths every image gets; PYTHONPATH is per image (its layers, top first).
PATH_ENV = ("PATH=/opt/mlserver/site/bin:/opt/kserve/site/bin:/opt/mlflow/site/bin:"
            "/opt/ml/site/bin:/usr/local/bin:/usr/bin:/bin")

KSERVE_SERVER = '''\
"""A KServe V1 model server for a scikit-learn (joblib/pickle) or XGBoost model directory.

Arguments as KServe's own sklearnserver/xgbserver: --model_name, --model_dir, --http_port.
"""
import argparse
import json
import pathlib

import joblib
import numpy as np
import kserve
from kserve import model_server

SKLEARN = (".joblib", ".pkl", ".pickle")
XGBOOST = (".json", ".ubj", ".bst")


class Model(kserve.Model):
    def __init__(self, name, model_dir):
        super().__init__(name)
        self.model_dir = pathlib.Path(model_dir)
        self.model = None

    def load(self):
        files = sorted(p for p in self.model_dir.rglob("*") if p.is_file())
        for path in files:
            if path.suffix in SKLEARN:
                self.model = joblib.load(path)
                break
            if path.suffix in XGBOOST and path.name != "model-settings.json":
                import xgboost
                booster = xgboost.Booster()
                booster.load_model(str(path))
                self.model = booster
                break
        if self.model is None:
            names = ", ".join(p.name for p in files) or "nothing"
            raise RuntimeError(f"no model file (*.joblib, *.pkl, *.json, *.ubj, *.bst) in "
                               f"{self.model_dir}: found {names}")
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        if isinstance(payload, (bytes, str)):  # a body sent without a JSON content type
            payload = json.loads(payload)
        rows = np.asarray(payload["instances"])
        if hasattr(self.model, "predict") and not hasattr(self.model, "inplace_predict"):
            result = self.model.predict(rows)
        else:
            import xgboost
            result = self.model.predict(xgboost.DMatrix(rows))
        return {"predictions": result.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", required=True, help="directory holding the model")
    args, _ = parser.parse_known_args()
    model = Model(args.model_name, args.model_dir)
    model.load()
    kserve.ModelServer().start([model])
'''


@dataclass(frozen=True)
class Layer:
    """Python distributions installed under /opt/<name>/site (plus extra files)."""

    name: str
    below: tuple[str, ...]
    requirements: tuple[str, ...]
    no_deps: tuple[str, ...] = ()  # installed without their dependencies (see comments)
    files: dict[str, str] = field(default_factory=dict)  # /opt/<name>/<path> -> content

    @property
    def site(self) -> str:
        return f"/opt/{self.name}/site"


LAYERS = {layer.name: layer for layer in (
    Layer("ml", (), ("scikit-learn==1.9.1", "xgboost-cpu==3.2.0", "lightgbm==4.7.0", "joblib")),
    # mlflow-skinny serves pyfunc models (`mlflow models serve`); pandas is what pyfunc
    # models take as input; skops is MLflow 3's default format for scikit-learn models.
    # Full `mlflow` would add its tracking server (~400 MB).
    Layer("mlflow", ("ml",), ("mlflow-skinny==3.17.2", "pandas", "cloudpickle",
                              "skops==0.16.0")),
    # the runtimes come without their dependencies: mlserver-xgboost wants `xgboost` (the
    # CUDA build, ~500 MB with NCCL; `xgboost-cpu` provides the same module) and
    # mlserver-mlflow the full `mlflow`
    Layer("mlserver", ("ml", "mlflow"), ("mlserver==1.7.1",),
          no_deps=("mlserver-sklearn==1.7.1", "mlserver-xgboost==1.7.1",
                   "mlserver-lightgbm==1.7.1", "mlserver-mlflow==1.7.1")),
    Layer("kserve", ("ml",), ("kserve==0.21.0",), files={"serve.py": KSERVE_SERVER}),
)}


@dataclass(frozen=True)
class ServerImage:
    """One server image: the base plus layers, and how it starts."""

    name: str
    repository: str
    tag: str
    layers: tuple[str, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    @property
    def pythonpath(self) -> str:
        return ":".join(LAYERS[name].site for name in reversed(self.layers))


IMAGES = {image.name: image for image in (
    # `mlflow models serve -m DIR` as the mlflow-pyfunc profile's command says
    ServerImage("mlflow", "servers/mlflow", "3.17.2", ("ml", "mlflow"),
                cmd=("mlflow", "models", "serve", "-m", "/mnt/models", "-h", "0.0.0.0",
                     "-p", "8080", "--env-manager", "local")),
    # as seldonio/mlserver: `mlserver start $MLSERVER_MODELS_DIR`. Parallel inference
    # workers crash under Python 3.11 + uvloop ("There is no current event loop").
    ServerImage("mlserver", "servers/mlserver", "1.7.1", ("ml", "mlflow", "mlserver"),
                cmd=("/bin/sh", "-c", 'exec mlserver start "${MLSERVER_MODELS_DIR:-/mnt/models}"'),
                env=("MLSERVER_PARALLEL_WORKERS=0",)),
    # as kserve/sklearnserver: the entrypoint takes --model_name/--model_dir/--http_port
    ServerImage("kserve", "servers/kserve", "0.21.0", ("ml", "kserve"),
                entrypoint=("python3", "/opt/kserve/serve.py"),
                cmd=("--model_name=model", "--model_dir=/mnt/models", "--http_port=8080")),
)}
ENV_NAMES = {"mlflow": "HARNESS_MLFLOW_SERVER_IMAGE", "mlserver": "HARNESS_MLSERVER_IMAGE",
             "kserve": "HARNESS_KSERVE_IMAGE"}


def oci_dir(layout: Layout) -> Path:
    return layout.cache / "servers-oci"


def _layers_dir(layout: Layout) -> Path:
    return layout.cache / "server-layers"


def layer_key(name: str) -> str:
    """Recipe hash of a layer and of everything below it."""
    layer = LAYERS[name]
    text = json.dumps([RECIPE, layer.name, layer.requirements, layer.no_deps,
                       sorted(layer.files.items()), [layer_key(b) for b in layer.below]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def layout_key() -> str:
    text = json.dumps([RECIPE, sorted(layer_key(n) for n in LAYERS),
                       sorted((i.name, i.repository, i.tag, i.layers, i.entrypoint, i.cmd, i.env)
                              for i in IMAGES.values())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def built(layout: Layout) -> bool:
    stamp = oci_dir(layout) / ".recipe"
    return stamp.exists() and stamp.read_text() == layout_key()


def ensure_built(layout: Layout) -> Path:
    """Build what is missing; returns the OCI layout (tags: the image names)."""
    target = oci_dir(layout)
    if built(layout):
        return target
    started = time.monotonic()
    tars = build_layers(layout)
    tmp = layout.cache / "servers-oci.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run(["skopeo", "copy", "--quiet", f"oci:{baseimage.oci_dir(layout)}:{baseimage.TAG}",
         f"oci:{tmp}:base"])
    for image in IMAGES.values():
        _assemble(tmp, image, tars)
    run(["umoci", "gc", "--layout", str(tmp)])
    (tmp / ".recipe").write_text(layout_key())
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    say(f"prediction-server images built in {time.monotonic() - started:.0f}s")
    return target


def build_layers(layout: Layout) -> dict[str, Path]:
    """The layers' tars (pip on the host; no base image needed, so it can run early)."""
    if all(_layer_current(layout, name) for name in LAYERS):
        return {name: _layers_dir(layout) / f"{name}.tar" for name in LAYERS}
    say("building the prediction-server layers (MLServer, MLflow, KServe): pip on the host; "
        "a few minutes the first time, cached in .harness/cache/server-layers")
    python = _pip_python(layout)
    return {name: _ensure_layer(layout, python, name) for name in LAYERS}


def _layer_current(layout: Layout, name: str) -> bool:
    root = _layers_dir(layout)
    key = root / f"{name}.key"
    return (root / f"{name}.tar").exists() and key.exists() and key.read_text() == layer_key(name)


def _pip_python(layout: Layout) -> str:
    """A Python 3.11 with pip of its own (Debian's python3 has none): a bare venv."""
    venv = layout.cache / "pip-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
    return str(python)


def _assemble(oci: Path, image: ServerImage, tars: dict[str, Path]) -> None:
    """base + the image's layers -> tag `image.name`, then its config."""
    source = "base"
    for name in image.layers:
        tag = "-".join(("stage", *image.layers[:image.layers.index(name) + 1]))
        if not _has_tag(oci, tag):
            run(["umoci", "raw", "add-layer", "--image", f"{oci}:{source}", "--tag", tag,
                 "--history.created_by",
                 f"harness: pip install {' '.join(LAYERS[name].requirements)}",
                 str(tars[name])])
        source = tag
    argv = ["umoci", "config", "--image", f"{oci}:{source}", "--tag", image.name,
            "--config.user", USER, "--config.workingdir", "/tmp",
            "--config.env", PATH_ENV, "--config.env", f"PYTHONPATH={image.pythonpath}",
            "--config.env", "HOME=/tmp", "--config.env", "PYTHONUNBUFFERED=1",
            "--config.exposedports", "8080/tcp", "--author", "management-agent harness"]
    for value in image.env:
        argv += ["--config.env", value]
    argv += ["--clear=config.entrypoint"] if not image.entrypoint else []
    for value in image.entrypoint:
        argv += ["--config.entrypoint", value]
    for value in image.cmd:
        argv += ["--config.cmd", value]
    run(argv)


def _has_tag(oci: Path, tag: str) -> bool:
    index = json.loads((oci / "index.json").read_text())
    return any(m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
               for m in index.get("manifests", []))


def _ensure_layer(layout: Layout, python: str, name: str) -> Path:
    """The layer's tar (uncompressed), rebuilt when its recipe changed."""
    layer = LAYERS[name]
    root = _layers_dir(layout)
    tar_path = root / f"{name}.tar"
    key_path = root / f"{name}.key"
    if _layer_current(layout, name):
        return tar_path
    for below in layer.below:
        _ensure_layer(layout, python, below)
    started = time.monotonic()
    say(f"server images: layer {name}: pip install {' '.join(layer.requirements + layer.no_deps)}")
    site = root / name / "site"
    shutil.rmtree(root / name, ignore_errors=True)
    site.mkdir(parents=True)
    _pip(layout, python, site, layer.requirements)
    if layer.no_deps:
        _pip(layout, python, site, layer.no_deps, "--no-deps")
    lower = {}
    for below in layer.below:
        lower.update(_distributions(root / below / "site"))
    removed = _drop_lower(site, lower)
    for path, content in layer.files.items():
        (root / name / path).write_text(content)
    _fix_scripts(site / "bin")
    _write_tar(root / name, layer, tar_path)
    key_path.write_text(layer_key(name))
    size = sum(p.stat().st_size for p in (root / name).rglob("*") if p.is_file()) >> 20
    say(f"server images: layer {name}: {size} MiB ({removed} distributions shared with the "
        f"layers below) in {time.monotonic() - started:.0f}s")
    return tar_path


def _pip(layout: Layout, python: str, site: Path, requirements: tuple[str, ...],
         *extra: str) -> None:
    log = layout.logs / "server-images-pip.log"
    with log.open("a") as out:
        result = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--only-binary=:all:", "--target", str(site), "--upgrade", *extra, *requirements],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
    if result.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed, see {log}")


def _normal(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _distributions(site: Path) -> dict[str, str]:
    """{normalised name: version} of the distributions installed in `site`."""
    found = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[:-len(".dist-info")].rpartition("-")
        found[_normal(name)] = version
    return found


def _drop_lower(site: Path, lower: dict[str, str]) -> int:
    """Remove the distributions a lower layer already has in the same version."""
    removed = 0
    for info in sorted(site.glob("*.dist-info")):
        name, _, version = info.name[:-len(".dist-info")].rpartition("-")
        if lower.get(_normal(name)) != version and not _provided_by_lower(name, lower):
            continue
        for line in (info / "RECORD").read_text().splitlines():
            path = (site / line.rsplit(",", 2)[0]).resolve()
            if path.is_relative_to(site.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
        removed += 1
    for directory in sorted((p for p in site.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return removed


def _provided_by_lower(name: str, lower: dict[str, str]) -> bool:
    """`xgboost` / `nvidia-*`: the CUDA build a dependency pulled in; xgboost-cpu below has it."""
    normal = _normal(name)
    return ("xgboost_cpu" in lower and normal == "xgboost") or normal.startswith("nvidia_")


def _fix_scripts(bin_dir: Path) -> None:
    """Console scripts carry the host's interpreter in their #! line: the image's is python3."""
    if not bin_dir.is_dir():
        return
    for script in bin_dir.iterdir():
        data = script.read_bytes() if script.is_file() else b""
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            script.write_bytes(b"#!/usr/bin/python3\n" + data.split(b"\n", 1)[1])


def _write_tar(root: Path, layer: Layer, tar_path: Path) -> None:
    """root/** -> opt/<layer>/** owned by root, readable by everyone (the server runs as 1000)."""
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("opt", f"opt/{layer.name}"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            info.uname = info.gname = "root"
            tar.addfile(info)

        def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = (info.mode | 0o444 | (0o111 if info.isdir() or info.mode & 0o100 else 0)) \
                & 0o755
            return info

        for child in sorted(root.iterdir()):
            tar.add(child, arcname=f"opt/{layer.name}/{child.name}", filter=normalise)
    tmp.replace(tar_path)


def push(layout: Layout, hostport: str) -> dict[str, str]:
    """Push every server image to the plain registry; returns {env name: reference}."""
    pushed = {}
    for image in IMAGES.values():
        reference = f"{hostport}/{image.repository}:{image.tag}"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
             f"oci:{oci_dir(layout)}:{image.name}", f"docker://{reference}"])
        pushed[ENV_NAMES[image.name]] = reference
    return pushed


def references(hostport: str) -> dict[str, str]:
    return {ENV_NAMES[i.name]: f"{hostport}/{i.repository}:{i.tag}" for i in IMAGES.values()}

"""The direct builder against real registries, verified with skopeo and umoci."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from images_support import Registries, skopeo_tls_args

from agent.config import Settings
from agent.errors import RegistryError
from agent.images import BuiltImage, build_model_image
from agent.images.layer import DirectorySource
from agent.model import DeploymentSpec, ModelRef
from tests.fixtures.harness import harness_down, harness_vars

pytestmark = pytest.mark.integration


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, message: str, level: str = "info", **details: Any) -> None:
        self.items.append((message, level, details))

    @property
    def messages(self) -> list[str]:
        return [m for m, _, _ in self.items]


def _spec(deployment: str = "churn", model: str = "model-1") -> DeploymentSpec:
    return DeploymentSpec(id=deployment, model=ModelRef(id=model, uri="file:///unused"))


RUN = uuid.uuid4().hex[:8]


def _settings(reg: Registries, repo_host: str, repo: str = "models/generated",
              **images: Any) -> Settings:
    repo = f"{repo}-{RUN}"
    credentials: dict[str, Any] = {}
    if repo_host == reg.tls:
        credentials = {"provider": "basic", "username": reg.tls_user,
                       "password": reg.tls_password}
    data: dict[str, Any] = {
        "generated_image_repository": f"{repo_host}/{repo}",
        "insecure_registries": [reg.plain],
        "ca_bundle": str(reg.ca_cert),
        "credentials": credentials,
        **images,
    }
    return Settings.model_validate({"images": data})


def _skopeo_inspect(reg: Registries, ref: str, tmp: Path, raw: bool = False) -> dict[str, Any]:
    host = ref.split("/", 1)[0]
    args = ["skopeo", "inspect", *skopeo_tls_args(reg, host, "", tmp / "certs")]
    if host == reg.tls:
        args.append(f"--creds={reg.tls_user}:{reg.tls_password}")
    if raw:
        args.append("--raw")
    out = subprocess.run([*args, f"docker://{ref}"], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out)


def _unpack(reg: Registries, ref: str, tmp: Path) -> Path:
    host = ref.split("/", 1)[0]
    layout, bundle = tmp / "pulled", tmp / "bundle"
    args = ["skopeo", "copy", "--quiet", *skopeo_tls_args(reg, host, "src", tmp / "certs")]
    if host == reg.tls:
        args.append(f"--src-creds={reg.tls_user}:{reg.tls_password}")
    subprocess.run([*args, f"docker://{ref}", f"oci:{layout}:img"], check=True,
                   capture_output=True)
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:img", str(bundle)],
                   check=True, capture_output=True)
    return bundle / "rootfs"


def _assert_model_in(rootfs: Path, model_dir: Path, model_path: str) -> None:
    target = rootfs / model_path.lstrip("/")
    for local in model_dir.rglob("*"):
        if local.is_file():
            copied = target / local.relative_to(model_dir)
            assert copied.read_bytes() == local.read_bytes(), copied
            assert (copied.stat().st_mode & 0o111 != 0) == (local.stat().st_mode & 0o111 != 0)
    assert (rootfs / "etc" / "base-release").is_file()


def _log_size(log: Path) -> int:
    return log.stat().st_size if log.is_file() else 0


def _upload_requests(log: Path, repo: str, since: int = 0) -> list[str]:
    """Blob-upload requests the registry logged for `repo` (distribution's access log)."""
    if not log.is_file():
        return []
    with log.open("rb") as stream:
        stream.seek(since)
        text = stream.read().decode("utf-8", "replace")
    pattern = re.compile(rf'"(POST|PATCH|PUT) (/v2/{re.escape(repo)}/blobs/uploads/\S*) '
                         r'HTTP/[0-9.]+" (\d+)')
    return [f"{m.group(1)} {m.group(2)} {m.group(3)}" for m in pattern.finditer(text)]


def test_direct_build_on_same_registry_mounts_base_and_is_verifiable(
        registries: Registries, base_images: dict[str, str], model_dir: Path,
        tmp_path: Path) -> None:
    settings = _settings(registries, registries.plain, repo="models/same")
    log = registries.logs["plain"]
    since = _log_size(log)
    events = Events()
    built = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models", settings,
                              events, source=DirectorySource(model_dir))
    assert isinstance(built, BuiltImage) and not built.reused
    assert re.fullmatch(rf"{registries.plain}/models/same-{RUN}:m-[0-9a-f]{{20}}", built.reference)
    assert built.digest.startswith("sha256:")

    info = _skopeo_inspect(registries, built.reference, tmp_path)
    labels = info["Labels"]
    assert labels["io.management-agent.model-id"] == "model-1"
    assert labels["io.management-agent.deployment-id"] == "churn"
    assert labels["io.management-agent.model-digest"].startswith("sha256:")
    assert labels["base.label"] == "kept"
    assert "MODEL_PATH=/mnt/models" in info["Env"] and "SERVER=tiny" in info["Env"]
    base_info = _skopeo_inspect(registries, base_images["plain-oci"], tmp_path)
    assert info["Layers"][:-1] == base_info["Layers"] and len(info["Layers"]) == 2
    assert info["Digest"] == built.digest
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir, "/mnt/models")

    # Mount, not upload: the only upload sessions in the target repo are the model layer's
    # and the config's; base blobs came by `?mount=`.
    lines = _upload_requests(log, f"models/same-{RUN}", since)
    assert lines, "the registry access log shows no upload requests"
    if lines:
        mounts = [line for line in lines if "mount=" in line]
        assert len(mounts) == 2 and all(m.endswith(" 201") for m in mounts)  # config + layer
        patches = [line for line in lines if line.startswith("PATCH")]
        puts = [line for line in lines if line.startswith("PUT")]
        assert len(puts) == 2  # model layer + new config
        assert len(patches) <= 1
    assert any(m.startswith("image pushed") for m in events.messages)


def test_second_build_reuses_the_tag_without_uploading(
        registries: Registries, base_images: dict[str, str], model_dir: Path) -> None:
    settings = _settings(registries, registries.plain, repo="models/reuse")
    first = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models", settings,
                              Events(), source=DirectorySource(model_dir))
    log = registries.logs["plain"]
    since = _log_size(log)
    events = Events()
    second = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models", settings,
                               events, source=DirectorySource(model_dir))
    assert second == BuiltImage(first.reference, first.digest, True)
    assert f"image reused: {first.reference}" in events.messages
    assert _upload_requests(log, f"models/reuse-{RUN}", since) == []


def test_build_is_deterministic_across_repositories(
        registries: Registries, base_images: dict[str, str], model_dir: Path) -> None:
    one = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models",
                            _settings(registries, registries.plain, repo="models/det-a"),
                            Events(), source=DirectorySource(model_dir))
    two = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models",
                            _settings(registries, registries.plain, repo="models/det-b"),
                            Events(), source=DirectorySource(model_dir))
    assert one.digest == two.digest
    assert one.reference.rsplit(":", 1)[1] == two.reference.rsplit(":", 1)[1]


def test_docker_base_gives_docker_manifest_and_model_path_is_honoured(
        registries: Registries, base_images: dict[str, str], model_dir: Path,
        tmp_path: Path) -> None:
    settings = _settings(registries, registries.plain, repo="models/docker")
    built = build_model_image(_spec(), base_images["plain-docker"], "/opt/ml/model", settings,
                              Events(), source=DirectorySource(model_dir))
    raw = _skopeo_inspect(registries, built.reference, tmp_path, raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["layers"][-1]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir, "/opt/ml/model")


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_other_compressions_give_oci_layers(
        registries: Registries, base_images: dict[str, str], model_dir: Path, tmp_path: Path,
        compression: str) -> None:
    pytest.importorskip("zstandard") if compression == "zstd" else None
    settings = _settings(registries, registries.plain, repo=f"models/c-{compression}",
                         compression=compression)
    built = build_model_image(_spec(), base_images["plain-docker"], "/mnt/models", settings,
                              Events(), source=DirectorySource(model_dir))
    raw = _skopeo_inspect(registries, built.reference, tmp_path, raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    suffix = {"none": "tar", "zstd": "tar+zstd"}[compression]
    assert raw["layers"][-1]["mediaType"] == f"application/vnd.oci.image.layer.v1.{suffix}"
    if compression == "none":
        _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir,
                         "/mnt/models")
        return
    # umoci 0.4.7 can't unpack zstd: pull with skopeo, decompress with the zstd CLI.
    layout = tmp_path / "pulled"
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{built.reference}", f"oci:{layout}:img"], check=True,
                   capture_output=True)
    blob = layout / "blobs" / "sha256" / raw["layers"][-1]["digest"].split(":")[1]
    tar_bytes = subprocess.run(["zstd", "-d", "-c", str(blob)], check=True,
                               capture_output=True).stdout
    config = json.loads((layout / "blobs" / "sha256" /
                         raw["config"]["digest"].split(":")[1]).read_bytes())
    assert config["rootfs"]["diff_ids"][-1] == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-x", "-C", str(rootfs)], input=tar_bytes, check=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "base-release").write_text("")
    _assert_model_in(rootfs, model_dir, "/mnt/models")


def test_cross_registry_build_copies_base_to_tls_basic_registry(
        registries: Registries, base_images: dict[str, str], model_dir: Path,
        tmp_path: Path) -> None:
    settings = _settings(registries, registries.tls, repo="models/cross",
                         chunk_size_bytes=128 * 1024)
    built = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models", settings,
                              Events(), source=DirectorySource(model_dir))
    assert built.reference.startswith(f"{registries.tls}/models/cross-{RUN}:m-")
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir, "/mnt/models")


def test_same_tls_registry_with_basic_auth_mounts(
        registries: Registries, base_images: dict[str, str], model_dir: Path,
        tmp_path: Path) -> None:
    settings = _settings(registries, registries.tls, repo="models/tls-mount")
    built = build_model_image(_spec(), base_images["tls-oci"], "/mnt/models", settings,
                              Events(), source=DirectorySource(model_dir))
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir, "/mnt/models")


def test_wrong_password_names_the_registry_and_hides_the_secret(
        registries: Registries, base_images: dict[str, str], model_dir: Path) -> None:
    secret = "wrong-Pa55-xyz-123"
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.tls}/models/denied-{RUN}",
        "ca_bundle": str(registries.ca_cert),
        "credentials": {"provider": "basic", "username": registries.tls_user,
                        "password": secret},
    }})
    with pytest.raises(RegistryError) as caught:
        build_model_image(_spec(), base_images["tls-oci"], "/mnt/models", settings, Events(),
                          source=DirectorySource(model_dir))
    text = str(caught.value)
    assert f"check the credentials for {registries.tls}" in text
    assert secret not in text and secret not in repr(caught.value.__cause__)


def test_untrusted_certificate_says_to_set_ca_bundle(
        registries: Registries, base_images: dict[str, str], model_dir: Path) -> None:
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.tls}/models/untrusted-{RUN}",
        "credentials": {"provider": "basic", "username": registries.tls_user,
                        "password": registries.tls_password},
    }})
    with pytest.raises(RegistryError, match=r"certificate not trusted: set images.ca_bundle"):
        build_model_image(_spec(), base_images["tls-oci"], "/mnt/models", settings, Events(),
                          source=DirectorySource(model_dir))


def test_missing_base_image_is_named(registries: Registries, model_dir: Path) -> None:
    settings = _settings(registries, registries.plain, repo="models/nobase")
    missing = f"{registries.plain}/base/does-not-exist:1"
    with pytest.raises(RegistryError, match=r"base image .*does-not-exist:1 not found"):
        build_model_image(_spec(), missing, "/mnt/models", settings, Events(),
                          source=DirectorySource(model_dir))


def test_production_path_opens_the_model_with_artifacts(
        registries: Registries, base_images: dict[str, str], model_dir: Path,
        tmp_path: Path) -> None:
    """No `source=`: the builder calls agent.artifacts.open_model on the spec's file:// URI."""
    settings = _settings(registries, registries.plain, repo="models/artifacts")
    settings.artifacts.file_roots = [model_dir]  # file:// is refused outside these
    spec = DeploymentSpec(id="fromuri", model=ModelRef(id="m2", uri=model_dir.as_uri()))
    built = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings, Events())
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model_dir, "/mnt/models")
    again = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings, Events())
    assert again.reused and again.digest == built.digest


@pytest.mark.slow
def test_built_image_runs_with_podman_and_loads_the_model(
        registries: Registries, tmp_path: Path) -> None:
    """Run the image with podman (runc, host network): python in the base reads MODEL_PATH."""
    base = os.environ.get("HARNESS_BASE_IMAGE") or harness_vars().get("HARNESS_BASE_IMAGE")
    if not base or shutil.which("podman") is None:
        harness_down("needs the harness base image and podman")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text('{"coef": [1, 2, 3]}')
    host = base.split("/", 1)[0]
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{host}/models/podman-{RUN}",
        "insecure_registries": [host]}})
    built = build_model_image(_spec(), base, "/srv/model", settings, Events(),
                              source=DirectorySource(model))
    storage = Path(tempfile.mkdtemp(prefix="img-podman-"))  # runroot must be < 50 chars
    script = ("import json, os; m = json.load(open(os.environ['MODEL_PATH'] + '/model.json'));"
              " print('served', sum(m['coef']))")
    try:
        result = subprocess.run(
            ["podman", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
             "--storage-driver", "vfs", "run", "--rm", "--runtime", "runc", "--network", "host",
             "--tls-verify=false", "--ulimit", "nofile=20000:20000",
             "--ulimit", "nproc=4096:4096", built.reference, "python3", "-c", script],
            capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["podman", "--root", str(storage / "root"), "--runroot",
                        str(storage / "run"), "--storage-driver", "vfs", "system", "reset",
                        "-f"], capture_output=True, timeout=120)
        shutil.rmtree(storage, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "served 6" in result.stdout


def test_multi_member_gzip_layer_unpacks_with_umoci(
        registries: Registries, base_images: dict[str, str], tmp_path: Path) -> None:
    """> 4 MiB: several gzip members, random blocks stored, compressible ones deflated."""
    model = tmp_path / "big"
    model.mkdir()
    (model / "weights.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    (model / "zeros.bin").write_bytes(b"\0" * (5 * 1024 * 1024))
    settings = _settings(registries, registries.plain, repo="models/members",
                         chunk_size_bytes=1024 * 1024)
    built = build_model_image(_spec(), base_images["plain-oci"], "/mnt/models", settings,
                              Events(), source=DirectorySource(model))
    raw = _skopeo_inspect(registries, built.reference, tmp_path, raw=True)
    assert 6 * 1024 * 1024 < raw["layers"][-1]["size"] < 9 * 1024 * 1024
    _assert_model_in(_unpack(registries, built.reference, tmp_path), model, "/mnt/models")

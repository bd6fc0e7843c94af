"""Fixtures of the image tests, on top of the harness's servers (tests/fixtures/harness.py).

`registries` bundles the harness's anonymous, basic/TLS and bearer-token
registries and moto (ECR API) into one object; `base_images` pushes a tiny
umoci-built base image to them in OCI and Docker formats.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from images_support import Registries, skopeo_tls_args

from tests.fixtures.harness import Moto, Registry, harness_dir


@pytest.fixture(scope="session")
def registries(registry: Registry, tls_registry: Registry, token_registry: Registry,
               moto: Moto) -> Registries:
    assert tls_registry.username and tls_registry.password and tls_registry.ca_cert
    return Registries(
        plain=registry.host, tls=tls_registry.host, tls_user=tls_registry.username,
        tls_password=tls_registry.password, ca_cert=tls_registry.ca_cert,
        token=token_registry.host, token_user=token_registry.username,
        token_password=token_registry.password, moto=moto.endpoint,
        ecr=moto.ecr_registry or tls_registry.host,
        logs={"plain": harness_dir() / "logs" / "registry.log"},
    )


@pytest.fixture(scope="session")
def base_images(registries: Registries, tmp_path_factory: pytest.TempPathFactory
                ) -> dict[str, str]:
    """A tiny base image built with umoci, pushed with skopeo in OCI and Docker formats.

    Keys: plain-oci, plain-docker (on the anonymous registry), tls-oci (on the
    basic/TLS registry).
    """
    work = tmp_path_factory.mktemp("base")
    layout = work / "layout"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, text=True)  # noqa: E731
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:1")
    bundle = work / "bundle"
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:1", str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "base-release").write_text("tiny base for image tests\n")
    (rootfs / "mnt").mkdir(exist_ok=True)
    run("umoci", "repack", "--image", f"{layout}:1", str(bundle))
    run("umoci", "config", "--image", f"{layout}:1", "--config.env", "SERVER=tiny",
        "--config.label", "base.label=kept", "--config.cmd", "/bin/true")
    images = {
        "plain-oci": f"{registries.plain}/base/tiny:oci",
        "plain-docker": f"{registries.plain}/base/tiny:docker",
        "tls-oci": f"{registries.tls}/base/tiny:oci",
    }
    if registries.token:
        images["token-oci"] = f"{registries.token}/base/tiny:oci"
    creds = {registries.tls: f"{registries.tls_user}:{registries.tls_password}"}
    if registries.token:
        creds[registries.token] = f"{registries.token_user}:{registries.token_password}"
    for key, ref in images.items():
        host = ref.split("/", 1)[0]
        args = ["skopeo", "copy", "--quiet",
                *skopeo_tls_args(registries, host, "dest", work / "certs")]
        if host in creds:
            args.append(f"--dest-creds={creds[host]}")
        if key.endswith("docker"):
            args.append("--format=v2s2")
        run(*args, f"oci:{layout}:1", f"docker://{ref}")
    return images


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model: nested files, an executable, a binary blob."""
    root = tmp_path / "model"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors:\n  python_function: {}\n")
    (root / "model.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "weights.npy").write_bytes(bytes(range(256)) * 1000)
    (root / "sub" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "sub" / "run.sh").chmod(0o755)
    return root


@pytest.fixture(scope="session")
def moto_endpoint(registries: Registries) -> str:
    assert registries.moto
    return registries.moto

"""`tools/build-agent-image --push`: the agent image into a user's registry, with their login.

The harness's basic-auth TLS registry plays the user's private registry (its
CA via --cert-dir, credentials on stdin); the harness base image plays the
official Python slim image, which cannot be pulled here.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.chart.chart_helpers import MINIMAL, find, render
from tests.fixtures.harness import Registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOOL = ROOT / "tools" / "build-agent-image"


def _build(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOL), *args], input=stdin, capture_output=True, text=True,
                          timeout=1200, cwd=ROOT)


def test_push_to_a_private_registry_prints_the_chart_values(
    tls_registry: Registry, harness_env: dict[str, str]
) -> None:
    target = tls_registry.ref("team/management-agent", "it-1")
    proc = _build(["--push", target, "--base", harness_env["HARNESS_BASE_IMAGE"],
                   "--cert-dir", str(tls_registry.cert_dir),
                   "--username", str(tls_registry.username), "--password-stdin"],
                  str(tls_registry.password))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert str(tls_registry.password) not in proc.stdout + proc.stderr
    sets = dict(re.findall(r"--set (agent\.image\.\w+)=(\S+)", proc.stdout))
    assert sets["agent.image.repository"] == f"{tls_registry.host}/team/management-agent"
    assert sets["agent.image.tag"] == "it-1"

    inspect = subprocess.run(
        ["skopeo", "inspect", "--cert-dir", str(tls_registry.cert_dir), "--creds",
         f"{tls_registry.username}:{tls_registry.password}", f"docker://{target}"],
        capture_output=True, text=True, timeout=120, check=True)
    manifest = json.loads(inspect.stdout)
    assert manifest["Digest"] == sets["agent.image.digest"]
    assert manifest["Labels"]["org.opencontainers.image.title"] == "management-agent"
    assert not list((ROOT / "build").glob("auth.*.json"))  # the temporary login is gone

    objects = render([MINIMAL], [f"{key}={value}" for key, value in sets.items()])
    image = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{sets['agent.image.repository']}@{sets['agent.image.digest']}"


def test_wrong_password_fails_before_building(tls_registry: Registry,
                                              harness_env: dict[str, str]) -> None:
    proc = _build(["--push", tls_registry.ref("team/management-agent", "never"),
                   "--base", harness_env["HARNESS_BASE_IMAGE"],
                   "--cert-dir", str(tls_registry.cert_dir),
                   "--username", str(tls_registry.username), "--password-stdin"], "wrong")
    assert proc.returncode != 0
    assert "login to" in proc.stderr and "failed" in proc.stderr
    assert "==> wheel" not in proc.stdout

"""The harness fixtures' rule: a harness that is down fails tests under CI=true, skips locally.

Today's failure mode this guards against: a half-started harness turned every Kubernetes
test into a green skip. `harness_down` is the one place that decides; the `kube` fixture is
checked end to end in a pytest subprocess pointed at a harness env file without the cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.harness import harness_down, harness_vars, require

ROOT = Path(__file__).resolve().parents[2]


def test_harness_down_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI=true the harness must be up"):
        harness_down("HARNESS_KUBECONFIG missing")


def test_harness_down_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="run tools/harness up"):
        harness_down("HARNESS_KUBECONFIG missing")


def test_require_names_the_missing_variables(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("HARNESS_REGISTRY=127.0.0.1:5000\nHARNESS_S3_ENDPOINT=\n")
    monkeypatch.setenv("HARNESS_ENV_FILE", str(env_file))
    monkeypatch.setenv("CI", "true")
    env = harness_vars()
    assert require(env, "HARNESS_REGISTRY") is env
    with pytest.raises(pytest.fail.Exception, match="HARNESS_S3_ENDPOINT, HARNESS_KUBECONFIG"):
        require(env, "HARNESS_S3_ENDPOINT", "HARNESS_KUBECONFIG")


def _run_kube_test(tmp_path: Path, env_text: str | None,
                   ci: bool) -> subprocess.CompletedProcess[str]:
    """A one-test pytest session using the `kube` fixture against the given env file."""
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["tests.fixtures.harness", "tests.fixtures.kube"]\n')
    (tmp_path / "test_uses_cluster.py").write_text("def test_cluster(kube):\n    pass\n")
    env_file = tmp_path / "harness.env"
    if env_text is not None:
        env_file.write_text(env_text)
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "HARNESS_KUBECONFIG")}
    environ.update(PYTHONPATH=str(ROOT), HARNESS_ENV_FILE=str(env_file),
                   HARNESS_DIR=str(tmp_path / "no-harness"))
    if ci:
        environ["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env_text", [None, "HARNESS_REGISTRY=127.0.0.1:5000\n"],
                         ids=["no-env-file", "half-started"])
def test_kube_fixture_fails_under_ci_when_the_cluster_is_down(tmp_path: Path,
                                                              env_text: str | None) -> None:
    proc = _run_kube_test(tmp_path, env_text, ci=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 error" in proc.stdout and "CI=true" in proc.stdout, proc.stdout


def test_kube_fixture_skips_locally_when_the_cluster_is_down(tmp_path: Path) -> None:
    proc = _run_kube_test(tmp_path, None, ci=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 skipped" in proc.stdout and "tools/harness up" in proc.stdout, proc.stdout

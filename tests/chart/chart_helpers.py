"""Helpers shared by the chart tests: find helm, render the chart, pick objects.

helm comes from the harness (HARNESS_HELM in .harness/env, see tools/harness)
or from PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.harness import harness_vars

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "management-agent"
EXAMPLES_DIR = ROOT / "charts" / "examples"
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.glob("*.yaml"))
MINIMAL = CHART / "ci" / "minimal-values.yaml"

#: Kinds that are not part of Kubernetes' own OpenAPI (CRDs): kubernetes_validate can't check them.
CRD_KINDS = {"ServiceMonitor", "Route", "HTTPRoute"}


def find_helm() -> str:
    """HARNESS_HELM (environment or .harness/env), else `helm` on PATH; fails clearly."""
    candidate = os.environ.get("HARNESS_HELM") or harness_vars().get("HARNESS_HELM")
    if candidate and Path(candidate).is_file():
        return candidate
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail("helm not found: run tools/harness up (it installs helm 3.18 into .harness/bin)")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; on failure (with check) the test fails with helm's stderr."""
    proc = subprocess.run([find_helm(), *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def value_args(files: Iterable[Path | str] = (), sets: Sequence[str] = ()) -> list[str]:
    args: list[str] = []
    for f in files:
        args += ["--values", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


def render(files: Iterable[Path | str] = (MINIMAL,), sets: Sequence[str] = (),
           release: str = "ma", namespace: str = "mlops") -> list[dict[str, Any]]:
    """`helm template` (hooks included) parsed into objects."""
    proc = helm("template", release, str(CHART), "--namespace", namespace,
                *value_args(files, sets))
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_error(files: Iterable[Path | str] = (MINIMAL,), sets: Sequence[str] = ()) -> str:
    """stderr of a `helm template` that must fail."""
    proc = helm("template", "ma", str(CHART), *value_args(files, sets), check=False)
    assert proc.returncode != 0, "expected helm template to fail"
    return proc.stderr


def example(name: str) -> list[Path]:
    return [EXAMPLES_DIR / name]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [o for o in objects
               if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def find_all(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def agent_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent config file the chart renders (the ConfigMap's config.yaml)."""
    data = yaml.safe_load(find(objects, "ConfigMap")["data"]["config.yaml"])
    assert isinstance(data, dict)
    return data


def deployment_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Plain-value environment of the agent container (valueFrom entries left out)."""
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def load_rendered_settings(objects: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The rendered config loaded by the agent's own load_settings, with the pod's env."""
    from agent.config import load_settings

    config_file = tmp_path / "config.yaml"
    config_file.write_text(find(objects, "ConfigMap")["data"]["config.yaml"])
    environ = {k: v for k, v in deployment_env(objects).items() if k.startswith("MGMT_AGENT_")}
    environ.pop("MGMT_AGENT_CONFIG", None)
    return load_settings(config_file, environ=environ)


def mounts_by_path(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volumes_by_name(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec.get("volumes", [])}

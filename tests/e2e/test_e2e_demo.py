"""The README's `make demo` and `make demo-gitops`, run as a user runs them.

`tools/demo` trains a model, deploys it through the reference control plane and the
agent onto the harness cluster in the real MLServer image, and prints the server's
answers next to the local model's, for v1 and again after replacing it with v2. The
test checks what a user reads: both answers equal, and v2's differ from v1's.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.harness import harness_vars, require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 900
ANSWER = re.compile(r"the server answers (\[.*?\]); the model trained here predicts (\[.*?\])")


def _run(script: str) -> subprocess.CompletedProcess[str]:
    # the demos use the repository's own harness (.harness/), as `make demo` does
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_ENV_FILE"}
    return subprocess.run([str(ROOT / "tools" / script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, env=env)


@pytest.mark.timeout(TIMEOUT + 60)
def test_demo_prints_a_real_servers_answers_equal_to_the_local_model() -> None:
    require(harness_vars(), "HARNESS_KUBECONFIG")
    proc = _run("demo")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    answers = [(ast.literal_eval(a), ast.literal_eval(b)) for a, b in ANSWER.findall(proc.stdout)]
    assert len(answers) == 2, output[-5000:]
    (v1_server, v1_local), (v2_server, v2_local) = answers
    assert v1_server == v1_local and v2_server == v2_local
    assert v1_server != v2_server  # the replacement really serves the other model
    assert "dashboard: http://" in proc.stdout  # the URL a user opens while it runs
    assert "the dashboard shows deployment iris: model iris-v2, ready" in proc.stdout
    # `deploy --wait` streams the rollout: ready pods of the new model out of those wanted
    ready = [(int(a), int(b)) for a, b in re.findall(r"pods ready (\d+)/(\d+)", proc.stdout)]
    assert ready and all(a <= b for a, b in ready), ready


@pytest.mark.timeout(TIMEOUT + 60)
def test_demo_gitops_commits_one_change_per_action() -> None:
    """No cluster: the filesystem plugin writes the manifests into a git working copy."""
    proc = _run("demo-gitops")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    repo = ROOT / ".demo" / "deployments"
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert len(log) >= 2, log  # deploy v1, replace with v2
    assert "iris-v2" in (repo / "iris" / "manifests.yaml").read_text()

"""`tools/try-local`: what a new user runs to try the chart on the harness cluster.

helm install with charts/examples/local.yaml -> a deployment ordered through the
reference control plane -> a prediction through the ingress URL -> cleanup. The
script does it all; this test runs it as a user would and checks the prediction,
once with the control plane as a local process and once installed in the cluster
(charts/control-plane, two replicas on the harness PostgreSQL).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.harness import harness_vars, require

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 900


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("control_plane", ["process", "chart"])
def test_try_local_installs_the_chart_deploys_and_predicts(control_plane: str) -> None:
    require(harness_vars(), "HARNESS_KUBECONFIG")
    proc = subprocess.run([str(ROOT / "tools" / "try-local")], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT,
                          env={**os.environ, "TRY_LOCAL_CONTROL_PLANE": control_plane})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "state: ready" in proc.stdout, output
    match = re.search(r"^prediction: (\{.*\})$", proc.stdout, re.MULTILINE)
    assert match, output
    # model.json answers 2.0 * sum(row); the script sends [[1, 2, 3]]
    assert json.loads(match.group(1)) == {"predictions": [12.0], "model": "iris-v1",
                                          "path": "/predict"}
    if control_plane == "chart":
        assert "charts/control-plane, PostgreSQL, 2 replicas" in proc.stdout, output

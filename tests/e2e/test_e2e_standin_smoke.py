"""Smoke test of the Kubernetes stand-in as a whole: kubectl apply -> rollout -> ingress answer.

Uses the harness cluster (``HARNESS_KUBECONFIG`` / ``HARNESS_INGRESS_URL``) when it
is up, otherwise starts its own stand-in (API server + controllers). Needs no
agent code: a Deployment running a tiny Python HTTP server on
``HARNESS_BASE_IMAGE``, a Service and an nginx Ingress with rewrite-target.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.fixtures.harness import harness_vars, require
from tools.kube.controllers.testing import SERVER_PY, StandinCluster, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  labels: {{app: smoke}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: smoke}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: smoke}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: server
        image: "{image}"
        command: ["python3", "-u", "-c", {server}]
        env:
        - {{name: MSG, value: "{msg}"}}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /ready, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: smoke
spec:
  selector: {{app: smoke}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: smoke
  annotations:
    nginx.ingress.kubernetes.io/rewrite-target: /$2
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - path: /{ns}/smoke(/|$)(.*)
        pathType: ImplementationSpecific
        backend:
          service:
            name: smoke
            port: {{number: 80}}
"""


class Target:
    def __init__(self, kubeconfig: str, ingress_url: str, kubectl: str) -> None:
        self.kubeconfig = kubeconfig
        self.ingress_url = ingress_url
        self.kubectl_bin = kubectl

    def kubectl(self, *args: str, input: str | None = None) -> str:
        res = subprocess.run([self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args],
                             input=input, capture_output=True, text=True, timeout=180,
                             check=False)
        assert res.returncode == 0, f"kubectl {args}: {res.stderr}{res.stdout}"
        return res.stdout


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return require(harness_vars(), "HARNESS_BASE_IMAGE")


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=3)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def target(env: dict[str, str]) -> Iterator[Target]:
    kubectl = env.get("HARNESS_KUBECTL") or "kubectl"
    if not os.path.exists(kubectl):
        kubectl = "kubectl"
    kc, url = env.get("HARNESS_KUBECONFIG"), env.get("HARNESS_INGRESS_URL")
    if kc and url and os.path.exists(kc) and _reachable(url):
        yield Target(kc, url, kubectl)
        return
    cluster = StandinCluster(env={"HARNESS_CA_CERT": env.get("HARNESS_CA_CERT", "")})
    cluster.start()
    try:
        yield Target(cluster.kubeconfig, cluster.ingress_url, kubectl)
    finally:
        cluster.stop()
        left = cluster.podman_ps()
        cluster.cleanup()
        assert left == [], "containers left behind"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


def test_deploy_rollout_and_answer_through_ingress(target: Target, env: dict[str, str]) -> None:
    ns = f"smoke-{uuid.uuid4().hex[:6]}"
    target.kubectl("create", "namespace", ns)
    server = '"' + SERVER_PY.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    try:
        t0 = time.monotonic()
        target.kubectl("apply", "-n", ns, "-f", "-", input=MANIFEST.format(
            image=env["HARNESS_BASE_IMAGE"], server=server, msg="v1", ns=ns))
        target.kubectl("rollout", "status", "-n", ns, "deploy/smoke", "--timeout=180s")
        url = f"{target.ingress_url}/{ns}/smoke/predict"
        wait_for(lambda: _get(url) == (200, "v1 /predict\n"), 30, what="answer via ingress")
        first = time.monotonic() - t0

        # a new template rolls out while the ingress keeps answering
        t1 = time.monotonic()
        target.kubectl("apply", "-n", ns, "-f", "-", input=MANIFEST.format(
            image=env["HARNESS_BASE_IMAGE"], server=server, msg="v2", ns=ns))
        seen = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            code, body = _get(url)
            assert code == 200, f"ingress answered {code} during the rollout"
            seen.add(body)
            if body == "v2 /predict\n" and "successfully rolled out" in target.kubectl(
                    "rollout", "status", "-n", ns, "deploy/smoke", "--watch=false"):
                break
            time.sleep(0.2)
        assert seen >= {"v2 /predict\n"}
        wait_for(lambda: _get(url) == (200, "v2 /predict\n") and
                 _get(url) == (200, "v2 /predict\n"), 30, what="only v2 answers")
        print(f"first deploy {first:.1f}s, rollout {time.monotonic() - t1:.1f}s")
    finally:
        target.kubectl("delete", "namespace", ns, "--wait=false")

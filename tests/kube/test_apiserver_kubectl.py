"""kubectl 1.33 and helm 3.18 against the stand-in (no controllers)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import requests

from tests.fixtures.harness import harness_down
from tests.fixtures.kube import KubeAPI, find_binary

KUBECTL = find_binary("kubectl")
HELM = find_binary("helm")

MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: IMAGE
        ports: [{containerPort: 80}]
        env: [{name: A, value: "1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


def run(api: KubeAPI, binary: str | None, *args: str, stdin: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    if binary is None:
        harness_down("kubectl/helm binary not found (tools/harness installs them)")
    proc = subprocess.run([binary, *args], input=stdin, capture_output=True, text=True,
                          env=api.env(), timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{binary} {' '.join(args)} failed: {proc.stderr}")
    return proc


def kubectl(api: KubeAPI, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(api, KUBECTL, *args, **kw)


def test_kubectl_apply_get_delete(kube_api: KubeAPI) -> None:
    out = kubectl(kube_api, "apply", "-f", "-", stdin=MANIFEST.replace("IMAGE", "nginx:1.25"))
    assert "deployment.apps/web created" in out.stdout and "service/web created" in out.stdout
    out = kubectl(kube_api, "apply", "-f", "-", stdin=MANIFEST.replace("IMAGE", "nginx:1.25"))
    assert "deployment.apps/web unchanged" in out.stdout
    out = kubectl(kube_api, "apply", "-f", "-", stdin=MANIFEST.replace("IMAGE", "nginx:1.26"))
    assert "deployment.apps/web configured" in out.stdout
    d = json.loads(kubectl(kube_api, "get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert d["metadata"]["generation"] == 2
    assert "kubectl.kubernetes.io/last-applied-configuration" in d["metadata"]["annotations"]
    wide = kubectl(kube_api, "get", "deploy,svc", "-o", "wide").stdout
    assert "nginx:1.26" in wide and "app=web" in wide and "CLUSTER-IP" in wide
    assert "name: web" in kubectl(kube_api, "get", "svc", "web", "-o", "yaml").stdout
    names = kubectl(kube_api, "get", "deploy", "-l", "app=web", "-o", "name").stdout
    assert names.strip() == "deployment.apps/web"
    kubectl(kube_api, "delete", "-f", "-", stdin=MANIFEST.replace("IMAGE", "x"))
    out = kubectl(kube_api, "get", "deploy", "web", check=False)
    assert out.returncode != 0
    assert 'deployments.apps "web" not found' in out.stderr


def test_kubectl_server_side_apply_conflict(kube_api: KubeAPI) -> None:
    doc = MANIFEST.replace("IMAGE", "nginx:1.25")
    out = kubectl(kube_api, "apply", "--server-side", "-f", "-", stdin=doc)
    assert "serverside-applied" in out.stdout
    kubectl(kube_api, "patch", "deploy", "web", "--type=merge", "-p",
            '{"spec":{"replicas":5}}', "--field-manager=editor")
    out = kubectl(kube_api, "apply", "--server-side", "-f", "-", stdin=doc, check=False)
    assert out.returncode != 0 and 'conflict with "editor"' in out.stderr
    kubectl(kube_api, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=doc)
    d = json.loads(kubectl(kube_api, "get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 2


def test_kubectl_client_side_to_server_side_apply_migration(kube_api: KubeAPI) -> None:
    """kubectl migrates managedFields with an explicit managedFields patch."""
    doc = MANIFEST.replace("IMAGE", "nginx:1.25")
    kubectl(kube_api, "apply", "-f", "-", stdin=doc)
    kubectl(kube_api, "apply", "--server-side", "-f", "-", stdin=doc)
    d = json.loads(kubectl(kube_api, "get", "deploy", "web", "-o", "json",
                           "--show-managed-fields").stdout)
    managers = {(m["manager"], m["operation"]) for m in d["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers
    assert ("kubectl-client-side-apply", "Update") not in managers
    kubectl(kube_api, "apply", "--server-side", "-f", "-",
            stdin=MANIFEST.replace("IMAGE", "nginx:1.26"))


def test_kubectl_imperative_commands(kube_api: KubeAPI) -> None:
    kubectl(kube_api, "create", "namespace", "imp")
    kubectl(kube_api, "-n", "imp", "create", "secret", "generic", "s", "--from-literal=a=b")
    kubectl(kube_api, "-n", "imp", "create", "configmap", "c", "--from-literal=k=v")
    kubectl(kube_api, "-n", "imp", "create", "serviceaccount", "sa")
    kubectl(kube_api, "-n", "imp", "label", "cm", "c", "x=y")
    kubectl(kube_api, "-n", "imp", "create", "deployment", "cd", "--image=img:2", "--port=80",
            "--replicas=3")
    kubectl(kube_api, "-n", "imp", "create", "job", "cj", "--image=img:3", "--", "echo", "x")
    d = json.loads(kubectl(kube_api, "-n", "imp", "get", "deploy", "cd", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 3 and d["spec"]["selector"]["matchLabels"] == {"app": "cd"}
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert (c["image"], c["ports"]) == ("img:2", [{"containerPort": 80, "protocol": "TCP"}])
    j = json.loads(kubectl(kube_api, "-n", "imp", "get", "job", "cj", "-o", "json").stdout)
    assert j["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "x"]
    assert kubectl(kube_api, "-n", "imp", "auth", "can-i", "create", "pods").stdout == "yes\n"
    secret = json.loads(kubectl(kube_api, "-n", "imp", "get", "secret", "s", "-o",
                                "json").stdout)
    assert secret["data"] == {"a": "Yg=="} and secret["type"] == "Opaque"
    out = kubectl(kube_api, "-n", "imp", "get", "cm", "-l", "x=y", "-o", "name").stdout
    assert out.strip() == "configmap/c"
    kubectl(kube_api, "-n", "imp", "apply", "-f", "-",
            stdin=MANIFEST.replace("IMAGE", "nginx:1.25"))
    kubectl(kube_api, "-n", "imp", "scale", "deploy", "web", "--replicas=4")
    assert kubectl(kube_api, "-n", "imp", "get", "deploy", "web", "-o",
                   "jsonpath={.spec.replicas}").stdout == "4"
    kubectl(kube_api, "delete", "namespace", "imp")
    assert kubectl(kube_api, "get", "ns", "imp", check=False).returncode != 0


def test_kubectl_logs_wait_and_rollout_status(kube_api: KubeAPI) -> None:
    kubectl(kube_api, "apply", "-f", "-", stdin=MANIFEST.replace("IMAGE", "nginx:1.25"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "main", "image": "x:1"}]}}
    requests.post(f"{kube_api.url}/api/v1/namespaces/default/pods", json=pod,
                  timeout=5).raise_for_status()
    out = kubectl(kube_api, "logs", "p", check=False)
    assert out.returncode != 0 and "waiting to start" in out.stderr
    log = kube_api.state_dir / "logs" / "default" / "p" / "main.log"
    log.parent.mkdir(parents=True)
    log.write_text("one\ntwo\nthree\n")
    assert kubectl(kube_api, "logs", "p").stdout == "one\ntwo\nthree\n"
    assert kubectl(kube_api, "logs", "p", "--tail=1").stdout == "three\n"
    out = kubectl(kube_api, "exec", "p", "--", "ls", check=False)
    assert out.returncode != 0 and "does not implement pods/exec" in out.stderr
    status = {"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                         "readyReplicas": 2, "availableReplicas": 2, "conditions": [
                             {"type": "Available", "status": "True", "reason": "MinimumReplicas"},
                             {"type": "Progressing", "status": "True",
                              "reason": "NewReplicaSetAvailable"}]}}
    requests.patch(f"{kube_api.url}/apis/apps/v1/namespaces/default/deployments/web/status",
                   json=status, timeout=5,
                   headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    out = kubectl(kube_api, "wait", "--for=condition=Available", "deploy/web", "--timeout=10s")
    assert "condition met" in out.stdout
    out = kubectl(kube_api, "rollout", "status", "deploy/web", "--timeout=10s")
    assert "successfully rolled out" in out.stdout
    out = kubectl(kube_api, "wait", "--for=delete", "pod/p", "--timeout=1s", check=False)
    assert out.returncode != 0


CHART = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "values.yaml": "image: nginx:1.25\nreplicas: 1\n",
    "templates/all.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: {{ .Values.image | quote }}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-cfg}
data: {image: {{ .Values.image | quote }}}
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}-svc}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
""",
}


def write_chart(root: Path) -> Path:
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_helm_install_upgrade_rollback_uninstall(kube_api: KubeAPI, tmp_path: Path) -> None:
    chart = str(write_chart(tmp_path / "chart"))
    out = run(kube_api, HELM, "install", "r1", chart, "-n", "default")
    assert "STATUS: deployed" in out.stdout
    secrets = json.loads(kubectl(kube_api, "get", "secrets", "-l", "owner=helm", "-o",
                                 "json").stdout)["items"]
    assert [s["metadata"]["name"] for s in secrets] == ["sh.helm.release.v1.r1.v1"]
    run(kube_api, HELM, "upgrade", "r1", chart, "--set", "image=nginx:1.26", "--set",
        "replicas=3")
    d = json.loads(kubectl(kube_api, "get", "deploy", "r1-web", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 3
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert "r1" in run(kube_api, HELM, "list").stdout
    run(kube_api, HELM, "rollback", "r1", "1")
    cfg = json.loads(kubectl(kube_api, "get", "cm", "r1-cfg", "-o", "json").stdout)
    assert cfg["data"]["image"] == "nginx:1.25"
    run(kube_api, HELM, "uninstall", "r1")
    left = kubectl(kube_api, "get", "deploy,cm,svc,secret", "-o", "name").stdout.split()
    assert left == ["service/kubernetes"]


def test_helm_install_wait_on_non_workloads(kube_api: KubeAPI, tmp_path: Path) -> None:
    chart = write_chart(tmp_path / "chart")
    (chart / "templates" / "all.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: only}\ndata: {a: b}\n")
    out = run(kube_api, HELM, "install", "r2", str(chart), "--wait", "--timeout", "20s")
    assert "STATUS: deployed" in out.stdout
    bad = run(kube_api, HELM, "install", "r3", str(chart), "--set", "x=1", check=False)
    assert bad.returncode != 0  # configmap "only" exists, owned by r2

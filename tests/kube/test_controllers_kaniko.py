"""The node's Kaniko shim: a Kaniko executor pod builds with buildah and pushes for real.

Images are verified independently with ``skopeo inspect``; registries are the
harness ones (``tools/harness up``).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.harness import require
from tools.kube.controllers.testing import StandinCluster, dump_debug, wait_for

pytestmark = pytest.mark.slow

KANIKO = "gcr.io/kaniko-project/executor:v1.23.2"


@pytest.fixture(scope="module")
def env(env: dict[str, str]) -> dict[str, str]:
    """The harness's variables; Kaniko pushes to its TLS registry."""
    return require(env, "HARNESS_REGISTRY_TLS")


def build_job(name: str, env: dict[str, str], args: list[str],
              extra_volumes: list[dict[str, Any]] | None = None,
              extra_mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Job: an init container writes the context into an emptyDir, Kaniko builds it."""
    dockerfile = (f"FROM {env['HARNESS_BASE_IMAGE']}\n"
                  "COPY model.txt /model/model.txt\n"
                  "RUN python3 -c \"open('/model/built.txt','w').write('built')\"\n"
                  'CMD ["python3", "-c", "print(open(\'/model/model.txt\').read())"]\n')
    script = ("cat > /workspace/Dockerfile <<'EOF'\n" + dockerfile + "EOF\n"
              "echo model-bytes > /workspace/model.txt\n")
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "context", "image": env["HARNESS_BASE_IMAGE"],
                                "command": ["sh", "-c", script],
                                "volumeMounts": [{"name": "ws", "mountPath": "/workspace"}]}],
            "containers": [{"name": "kaniko", "image": KANIKO,
                            "args": ["--context=dir:///workspace", "--dockerfile=Dockerfile",
                                     "--cache=true", *args],
                            "volumeMounts": [{"name": "ws", "mountPath": "/workspace"},
                                             *(extra_mounts or [])]}],
            "volumes": [{"name": "ws", "emptyDir": {}}, *(extra_volumes or [])],
        }}},
    }


def job_result(cluster: StandinCluster, ns: str, name: str) -> str:
    def done() -> str | None:
        job = cluster.client.get("jobs", ns, name) or {}
        for c in (job.get("status") or {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return str(c["type"])
        return None
    return wait_for(done, 240, what=f"job {name}")


def skopeo_inspect(ref: str, *flags: str) -> dict[str, Any]:
    res = subprocess.run(["skopeo", "inspect", *flags, f"docker://{ref}"], capture_output=True,
                         text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def test_kaniko_build_and_push_plain_http(cluster: StandinCluster, ns: str,
                                          env: dict[str, str]) -> None:
    dest = f"{env['HARNESS_REGISTRY']}/kaniko-test/{ns}:v1"
    cluster.apply([build_job("build", env, [f"--destination={dest}", "--insecure",
                                            "--build-arg=UNUSED=1",
                                            "--digest-file=/dev/termination-log"])], ns)
    result = job_result(cluster, ns, "build")
    logs = cluster.kubectl("logs", "-n", ns, "job/build", "-c", "kaniko").stdout
    assert result == "Complete", logs + dump_debug(cluster, ns)
    assert "Pushing image to" in logs and "Pushed" in logs
    info = skopeo_inspect(dest, "--tls-verify=false")
    assert info["Digest"].startswith("sha256:")
    # --digest-file=/dev/termination-log lands in the container status, like on a kubelet
    pod = cluster.pods(ns, "job-name=build")[0]
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["message"] == info["Digest"]
    base = skopeo_inspect(env["HARNESS_BASE_IMAGE"], "--tls-verify=false")
    assert len(info["Layers"]) > len(base["Layers"])
    # like a Kaniko pod, a build keeps no image store (removed once the container exited):
    # the next build pulls its base again
    state = Path(cluster.state_dir)
    wait_for(lambda: not [p for p in state.iterdir()
                          if p.name.startswith(("kaniko-shim-", "buildah"))],
             60, what="the build's image store removed")
    # the built image runs on the node
    cluster.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run"},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "c", "image": dest}]}}], ns)
    wait_for(lambda: (cluster.pod(ns, "run") or {}).get("status", {}).get("phase")
             == "Succeeded", 90, what="built image ran")
    assert "model-bytes" in cluster.kubectl("logs", "-n", ns, "run").stdout


def _docker_config(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {host: {"auth": auth}}})


def test_kaniko_tls_registry_with_credentials(cluster: StandinCluster, ns: str,
                                              env: dict[str, str]) -> None:
    host = env["HARNESS_REGISTRY_TLS"]
    good = _docker_config(host, env["HARNESS_REGISTRY_TLS_USER"],
                          env["HARNESS_REGISTRY_TLS_PASSWORD"])
    bad = _docker_config(host, env["HARNESS_REGISTRY_TLS_USER"], "wrong-password")
    with open(env["HARNESS_CA_CERT"], encoding="utf-8") as fh:
        ca = fh.read()
    for name, cfg in (("good-creds", good), ("bad-creds", bad)):
        cluster.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                        "type": "kubernetes.io/dockerconfigjson",
                        "data": {".dockerconfigjson": base64.b64encode(cfg.encode()).decode()}}],
                      ns)
    cluster.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"},
                    "data": {"ca.crt": ca}}], ns)

    def job(name: str, secret: str, dest: str) -> dict[str, Any]:
        return build_job(
            name, env, [f"--destination={dest}", f"--registry-certificate={host}=/certs/ca.crt"],
            extra_volumes=[{"name": "docker", "secret": {"secretName": secret, "items": [
                               {"key": ".dockerconfigjson", "path": "config.json"}]}},
                           {"name": "certs", "configMap": {"name": "ca"}}],
            extra_mounts=[{"name": "docker", "mountPath": "/kaniko/.docker"},
                          {"name": "certs", "mountPath": "/certs"}])

    dest = f"{host}/kaniko-test/{ns}:tls"
    cluster.apply([job("good", "good-creds", dest),
                   job("bad", "bad-creds", f"{host}/kaniko-test/{ns}:bad")], ns)
    assert job_result(cluster, ns, "bad") == "Failed"
    bad_logs = cluster.kubectl("logs", "-n", ns, "job/bad", "-c", "kaniko").stdout
    assert "error checking push permissions -- make sure you entered the correct tag name" \
        in bad_logs
    assert "UNAUTHORIZED" in bad_logs
    pod = cluster.pods(ns, "job-name=bad")[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    result = job_result(cluster, ns, "good")
    logs = cluster.kubectl("logs", "-n", ns, "job/good", "-c", "kaniko").stdout
    assert result == "Complete", logs + dump_debug(cluster, ns)
    info = skopeo_inspect(dest, "--creds",
                          f"{env['HARNESS_REGISTRY_TLS_USER']}:"
                          f"{env['HARNESS_REGISTRY_TLS_PASSWORD']}",
                          "--cert-dir", _cert_dir(env["HARNESS_CA_CERT"]))
    assert info["Digest"].startswith("sha256:")


def _cert_dir(ca: str) -> str:
    import os
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="ca-")
    shutil.copyfile(ca, os.path.join(d, "ca.crt"))
    return d

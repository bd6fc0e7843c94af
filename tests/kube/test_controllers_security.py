"""What a real cluster refuses, refused by the stand-in: kubelet security checks, Pod Security
admission, private pulls (docs/kube-standin.md "Security").

One stand-in cluster (API server + controllers + podman node) for the module; pods run the
harness base image, which has no USER (it runs as root, like most server images).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tools.kube.controllers.testing import StandinCluster, dump_debug, wait_for

pytestmark = pytest.mark.slow

PSA = "pod-security.kubernetes.io/"
RESTRICTED_SC = {"runAsNonRoot": True, "runAsUser": 1000, "allowPrivilegeEscalation": False,
                 "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def waiting(cluster: StandinCluster, ns: str, name: str) -> dict[str, Any]:
    statuses = ((cluster.pod(ns, name) or {}).get("status") or {}).get("containerStatuses")
    return ((statuses or [{}])[0].get("state") or {}).get("waiting") or {}


def phase(cluster: StandinCluster, ns: str, name: str) -> str:
    return str(((cluster.pod(ns, name) or {}).get("status") or {}).get("phase"))


def pod(name: str, image: str, script: str = "", pod_sc: dict[str, Any] | None = None,
        **container: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "image": image, **container}
    if script:
        c["command"] = ["python3", "-c", script]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "securityContext": pod_sc or {}, "containers": [c]}}


def test_root_image_with_run_as_non_root_fails_with_create_container_config_error(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    cluster.apply([pod("rootless", env["HARNESS_BASE_IMAGE"], "print('ran')",
                       pod_sc={"runAsNonRoot": True})], ns)
    wait_for(lambda: waiting(cluster, ns, "rootless").get("reason") ==
             "CreateContainerConfigError", 90, what="CreateContainerConfigError")
    uid = cluster.pod(ns, "rootless")["metadata"]["uid"]  # type: ignore[index]
    message = (f'container has runAsNonRoot and image will run as root (pod: '
               f'"rootless_{ns}({uid})", container: c)')
    assert waiting(cluster, ns, "rootless")["message"] == message
    assert phase(cluster, ns, "rootless") == "Pending"
    assert f"Error: {message}" in [e["message"] for e in cluster.events(ns)
                                   if e["reason"] == "Failed"]


def test_security_context_reaches_the_process_and_its_volumes(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    script = r"""
import json, os, sys
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
out = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
       "caps": status["CapEff"].strip(), "nnp": status["NoNewPrivs"].strip(),
       "seccomp": status["Seccomp"].strip(), "argv": sys.argv[1:], "greeting": os.environ["G2"]}
for path in ("/rootfs-write", "/data/ok", "/tmp/x"):
    try:
        open(path, "w").write("x")
        out[path] = os.stat(path).st_gid
    except OSError as exc:
        out[path] = exc.strerror
print(json.dumps(out), flush=True)
"""
    hardened = pod("hardened", env["HARNESS_BASE_IMAGE"], script,
                   pod_sc={"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 3000,
                           "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
                   securityContext={"readOnlyRootFilesystem": True,
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
                   args=["$(G1)", "$$(G1)", "$(MISSING)"],
                   env=[{"name": "G1", "value": "hi"}, {"name": "G2", "value": "$(G1) there"}],
                   volumeMounts=[{"name": "data", "mountPath": "/data"}])
    hardened["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    plain = pod("plain", env["HARNESS_BASE_IMAGE"], script.replace('"/data/ok", ', ""),
                env=[{"name": "G2", "value": "x"}])
    cluster.apply([hardened, plain], ns)
    for name in ("hardened", "plain"):
        wait_for(lambda n=name: phase(cluster, ns, n) in ("Succeeded", "Failed"), 120,
                 what=f"{name} finished")
    logs = {n: json.loads(cluster.kubectl("logs", "-n", ns, n).stdout.strip().splitlines()[-1])
            for n in ("hardened", "plain")}
    got = logs["hardened"]
    assert (got["uid"], got["gid"]) == (1000, 3000), dump_debug(cluster, ns)
    assert 2000 in got["groups"]
    assert got["caps"] == "0000000000000000" and got["nnp"] == "1" and got["seccomp"] == "2"
    assert got["/rootfs-write"] == "Read-only file system"
    assert got["/tmp/x"] == "Read-only file system"  # no tmpfs on /tmp in Kubernetes
    assert got["/data/ok"] == 2000  # emptyDir owned by the fsGroup, setgid
    assert got["argv"] == ["hi", "$(G1)", "$(MISSING)"] and got["greeting"] == "hi there"
    root = logs["plain"]
    assert root["uid"] == 0 and root["seccomp"] == "0"  # no profile: Unconfined
    assert int(root["caps"], 16) & (1 << 13)  # NET_RAW: containerd's default set
    assert root["/rootfs-write"] == 0


def test_privileged_pod_in_restricted_namespace_is_refused_at_create(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    cluster.kubectl("label", "namespace", ns, f"{PSA}enforce=restricted",
                    f"{PSA}warn=restricted")
    res = cluster.kubectl("apply", "-n", ns, "-f", "-", check=False, input=json.dumps(
        pod("priv", env["HARNESS_BASE_IMAGE"], securityContext={"privileged": True})))
    assert res.returncode != 0
    assert 'pods "priv" is forbidden: violates PodSecurity "restricted:latest": privileged ' \
           '(container "c" must not set securityContext.privileged=true)' in res.stderr
    assert cluster.pod(ns, "priv") is None
    ok = pod("ok", env["HARNESS_BASE_IMAGE"], "print('compliant')", securityContext=RESTRICTED_SC)
    cluster.apply([ok], ns)
    wait_for(lambda: phase(cluster, ns, "ok") == "Succeeded", 120, what="compliant pod runs")


def test_workloads_are_admitted_but_their_pods_are_refused(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    cluster.kubectl("label", "namespace", ns, f"{PSA}enforce=baseline",
                    f"{PSA}warn=baseline")
    template = {"metadata": {"labels": {"app": "w"}}, "spec": {
        "hostNetwork": True, "containers": [{"name": "c", "image": env["HARNESS_BASE_IMAGE"],
                                             "command": ["sleep", "60"]}]}}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
           "spec": {"selector": {"matchLabels": {"app": "w"}}, "template": template}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {**template, "spec": {**template["spec"],
                                                      "restartPolicy": "Never"}}}}
    res = cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(dep))
    assert 'Warning: would violate PodSecurity "baseline:latest": host namespaces ' \
           "(hostNetwork)" in res.stderr
    cluster.apply([job], ns)

    def failed_create(kind: str) -> list[str]:
        return [e["message"] for e in cluster.events(ns) if e["reason"] == "FailedCreate"
                and e["involvedObject"]["kind"] == kind]
    wait_for(lambda: failed_create("ReplicaSet") and failed_create("Job"), 60,
             what="FailedCreate on the ReplicaSet and the Job")
    message = failed_create("ReplicaSet")[0]
    assert message.startswith('Error creating: pods "w-') and message.endswith(
        'is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostNetwork)')
    assert cluster.pods(ns) == []

    def replica_failure() -> dict[str, Any] | None:
        conds = ((cluster.client.get("deployments", ns, "w") or {}).get("status") or {}).get(
            "conditions") or []
        return next((c for c in conds if c["type"] == "ReplicaFailure"), None)
    cond = wait_for(replica_failure, 30, what="ReplicaFailure on the Deployment")
    assert cond["reason"] == "FailedCreate" and "violates PodSecurity" in cond["message"]


def test_pull_from_authenticated_registry_without_secret_fails_with_err_image_pull(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    image = env.get("HARNESS_BASE_IMAGE_TLS")
    assert image, "tools/harness up pushes the base image to the basic-auth registry"
    cluster.apply([pod("anon", image, "print('x')", imagePullPolicy="Always")], ns)
    state = wait_for(lambda: waiting(cluster, ns, "anon").get("reason") in (
        "ErrImagePull", "ImagePullBackOff") and waiting(cluster, ns, "anon"), 90,
        what="pull failure")
    assert state["message"].startswith(f'failed to pull and unpack image "{image}": ')
    assert "authentication required" in state["message"] or \
        "unauthorized" in state["message"].lower(), state
    failed = [e["message"] for e in cluster.events(ns) if e["reason"] == "Failed"]
    assert any(m.startswith(f'Failed to pull image "{image}": ') for m in failed), failed
    assert "Error: ErrImagePull" in failed
    assert phase(cluster, ns, "anon") == "Pending"


def test_service_account_pull_secret_is_used(cluster: StandinCluster, ns: str,
                                              env: dict[str, str]) -> None:
    image = env.get("HARNESS_BASE_IMAGE_TLS")
    assert image, "tools/harness up pushes the base image to the basic-auth registry"
    cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns,
                    f"--docker-server={env['HARNESS_REGISTRY_TLS']}",
                    f"--docker-username={env['HARNESS_REGISTRY_TLS_USER']}",
                    f"--docker-password={env['HARNESS_REGISTRY_TLS_PASSWORD']}")
    cluster.apply([{"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "regcred"}]}],
                  ns)
    p = pod("via-sa", image, "print('pulled with the service account')",
            imagePullPolicy="Always")
    p["spec"]["serviceAccountName"] = "puller"
    cluster.apply([p], ns)
    assert cluster.pod(ns, "via-sa")["spec"]["imagePullSecrets"] == [  # type: ignore[index]
        {"name": "regcred"}]
    wait_for(lambda: phase(cluster, ns, "via-sa") == "Succeeded", 120,
             what="pod pulled with the ServiceAccount's secret")
    assert "pulled with the service account" in cluster.kubectl("logs", "-n", ns,
                                                                "via-sa").stdout

"""The stand-in's controllers and podman node, against the real stand-in API server.

One cluster (``python -m tools.kube serve`` with controllers) per module; pods
run the harness base image (``HARNESS_BASE_IMAGE`` from ``tools/harness up``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.fixtures.harness import harness_down
from tools.kube.controllers.testing import (
    SERVER_PY,
    StandinCluster,
    dump_debug,
    server_deployment,
    service,
    wait_for,
)

pytestmark = pytest.mark.slow


def get(url: str, timeout: float = 3) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def endpoints(cluster: StandinCluster, ns: str, name: str) -> tuple[list[str], list[str]]:
    """Ready and not-ready ``podIP:port`` addresses of a Service (first port)."""
    ep = cluster.client.get("endpoints", ns, name) or {}
    ready, not_ready = [], []
    for subset in ep.get("subsets") or []:
        port = subset["ports"][0]["port"]
        ready += [f"{a['ip']}:{port}" for a in subset.get("addresses") or []]
        not_ready += [f"{a['ip']}:{port}" for a in subset.get("notReadyAddresses") or []]
    return ready, not_ready


def waiting_reason(pod: dict[str, Any] | None) -> str:
    for cs in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        return str((cs.get("state") or {}).get("waiting", {}).get("reason", ""))
    return ""


def test_rollout_replaces_pods_while_old_keep_serving(cluster: StandinCluster, ns: str,
                                                     env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    cluster.apply([server_deployment("web", image, "v1", replicas=2), service("web")], ns)
    t0 = time.monotonic()
    cluster.kubectl("rollout", "status", "-n", ns, "deploy/web", "--timeout=120s")
    first_rollout = time.monotonic() - t0
    ready, _ = endpoints(cluster, ns, "web")
    assert len(ready) == 2
    # two replicas of a server on the same port, each at its own pod address
    assert len({a.split(":")[0] for a in ready}) == 2 and {a.split(":")[1] for a in ready} == {
        "8080"}
    assert {get(f"http://{p}/x")[1] for p in ready} == {"v1 /x\n"}

    # new template: its pods become ready only after 4 s; old pods must keep serving
    cluster.apply([server_deployment("web", image, "v2", replicas=2, delay=4)], ns)
    answers = []
    saw_new_unready_with_old_serving = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        dep = cluster.client.get("deployments", ns, "web") or {}
        st = dep.get("status") or {}
        ready, not_ready = endpoints(cluster, ns, "web")
        assert ready, "no ready endpoint during the rollout:\n" + dump_debug(cluster, ns)
        for p in ready:
            code, body = get(f"http://{p}/x")
            if code == 200:
                answers.append(body)
        if not_ready and "v1 /x\n" in answers:
            saw_new_unready_with_old_serving = True
        if st.get("observedGeneration") == dep["metadata"].get("generation") and \
                st.get("updatedReplicas") == 2 and st.get("replicas") == 2 and \
                st.get("availableReplicas") == 2:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("rollout did not finish:\n" + dump_debug(cluster, ns))
    assert saw_new_unready_with_old_serving
    cluster.kubectl("rollout", "status", "-n", ns, "deploy/web", "--timeout=30s")
    ready, _ = endpoints(cluster, ns, "web")
    assert {get(f"http://{p}/x")[1] for p in ready} == {"v2 /x\n"}
    rs = cluster.client.list("replicasets", ns)["items"]
    assert len(rs) == 2
    hashes = {r["metadata"]["labels"]["pod-template-hash"] for r in rs}
    pods = cluster.pods(ns, "app=web")
    assert len(pods) == 2
    assert all(p["metadata"]["labels"]["pod-template-hash"] in hashes for p in pods)
    conds = {c["type"]: c for c in dep["status"]["conditions"]}
    wait_for(lambda: {c["type"]: c["reason"] for c in (cluster.client.get(
        "deployments", ns, "web") or {})["status"]["conditions"]}["Progressing"]
        == "NewReplicaSetAvailable", 10, what="Progressing=NewReplicaSetAvailable")
    assert conds["Available"]["status"] == "True"
    print(f"first rollout (2 pods, image cached or not): {first_rollout:.1f}s")


def test_readiness_gates_endpoints(cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    cluster.apply([server_deployment("slow", env["HARNESS_BASE_IMAGE"], delay=3),
                   service("slow")], ns)
    wait_for(lambda: endpoints(cluster, ns, "slow")[1], 60, what="a not-ready address")
    assert endpoints(cluster, ns, "slow")[0] == []
    pod = cluster.pods(ns, "app=slow")[0]
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    ready = wait_for(lambda: endpoints(cluster, ns, "slow")[0], 30, what="a ready address")
    pod = cluster.pods(ns, "app=slow")[0]
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    assert ready[0] == f"{pod['status']['podIP']}:8080"
    assert pod["status"]["podIP"] != pod["status"]["hostIP"]
    assert pod["spec"]["nodeName"] == "harness-node"
    assert get(f"http://{ready[0]}/ok")[1] == "v1 /ok\n"


def test_image_pull_failure_stays_pending(cluster: StandinCluster, ns: str,
                                          env: dict[str, str]) -> None:
    image = f"{env['HARNESS_REGISTRY']}/does/not-exist:1"
    cluster.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
                    "spec": {"containers": [{"name": "c", "image": image}]}}], ns)
    wait_for(lambda: waiting_reason(cluster.pod(ns, "bad")) == "ImagePullBackOff", 60,
             what="ImagePullBackOff")
    pod = cluster.pod(ns, "bad") or {}
    assert pod["status"]["phase"] == "Pending"
    assert "manifest unknown" in pod["status"]["containerStatuses"][0]["state"]["waiting"][
        "message"]
    reasons = {e["reason"] for e in cluster.events(ns)}
    assert {"Pulling", "Failed", "BackOff"} <= reasons


def test_private_registry_pull_with_image_pull_secret(cluster: StandinCluster, ns: str,
                                                      env: dict[str, str]) -> None:
    image = env.get("HARNESS_BASE_IMAGE_TLS")
    if not image:
        harness_down("no HARNESS_BASE_IMAGE_TLS")
    host = env["HARNESS_REGISTRY_TLS"]
    cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns,
                    f"--docker-server={host}",
                    f"--docker-username={env['HARNESS_REGISTRY_TLS_USER']}",
                    f"--docker-password={env['HARNESS_REGISTRY_TLS_PASSWORD']}")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"restartPolicy": "Never", "imagePullSecrets": [{"name": "regcred"}],
                    "containers": [{"name": "c", "image": image,
                                    "command": ["python3", "-c", "print('pulled ok')"]}]}}
    nosecret = json.loads(json.dumps(pod))
    nosecret["metadata"]["name"] = "nosecret"
    del nosecret["spec"]["imagePullSecrets"]
    # like a kubelet, a present image is not pulled again unless the policy says Always
    nosecret["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    cluster.apply([pod, nosecret], ns)
    wait_for(lambda: (cluster.pod(ns, "p") or {}).get("status", {}).get("phase") == "Succeeded",
             120, what="pod p Succeeded")
    assert "pulled ok" in cluster.kubectl("logs", "-n", ns, "p").stdout
    wait_for(lambda: waiting_reason(cluster.pod(ns, "nosecret")) in ("ErrImagePull",
                                                                       "ImagePullBackOff"),
             60, what="pull failure without credentials")


def test_jobs_complete_fail_and_deadline(cluster: StandinCluster, ns: str,
                                         env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]

    def job(name: str, code: str, **spec: Any) -> dict[str, Any]:
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                "spec": {**spec, "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": image, "command": ["python3", "-c", code]}]}}}}

    cluster.apply([job("ok", "print('job done')"),
                   job("bad", "import sys; print('boom'); sys.exit(3)", backoffLimit=1),
                   job("slow", "import time; time.sleep(120)", activeDeadlineSeconds=3),
                   job("ttl", "pass", ttlSecondsAfterFinished=1)], ns)

    def cond(name: str) -> tuple[str, str] | None:
        j = cluster.client.get("jobs", ns, name) or {}
        for c in (j.get("status") or {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return c["type"], c["reason"]
        return None

    assert wait_for(lambda: cond("ok"), 90, what="job ok") == ("Complete", "CompletionsReached")
    assert wait_for(lambda: cond("bad"), 90, what="job bad") == ("Failed",
                                                                 "BackoffLimitExceeded")
    assert wait_for(lambda: cond("slow"), 60, what="job slow") == ("Failed", "DeadlineExceeded")
    ok = cluster.client.get("jobs", ns, "ok") or {}
    assert ok["status"]["succeeded"] == 1 and ok["status"].get("completionTime")
    bad = cluster.client.get("jobs", ns, "bad") or {}
    assert bad["status"]["failed"] == 2
    assert "job done" in cluster.kubectl("logs", "-n", ns, "job/ok").stdout
    failed_pod = cluster.pods(ns, "job-name=bad")[0]
    term = failed_pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    wait_for(lambda: cluster.client.get("jobs", ns, "ttl") is None, 60,
             what="job deleted after ttlSecondsAfterFinished")
    wait_for(lambda: not [p for p in cluster.pods(ns, "job-name=slow")
                          if p["status"].get("phase") == "Running"], 30,
             what="deadline-exceeded pods gone")


def test_init_containers_env_volumes_and_logs(cluster: StandinCluster, ns: str,
                                              env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    cluster.kubectl("create", "secret", "generic", "creds", "-n", ns,
                    "--from-literal=token=s3cr3t", "--from-literal=user=alice")
    cluster.kubectl("create", "configmap", "cfg", "-n", ns, "--from-literal=MODE=fast",
                    "--from-literal=conf.ini=[x]")
    main = r"""
import os, pathlib
print("order:", pathlib.Path("/work/order").read_text().split())
print("token-env:", os.environ["TOKEN"], "mode:", os.environ["CFG_MODE"])
print("pod:", os.environ["POD_NAME"], os.environ["POD_NS"], os.environ["POD_IP"])
print("secret-file:", pathlib.Path("/secret/tok").read_text(),
      oct(os.stat("/secret/tok").st_mode & 0o777))
print("config-file:", pathlib.Path("/config/conf.ini").read_text())
print("pvc:", pathlib.Path("/data/x").read_text())
print("cwd:", os.getcwd(), "port-env:", os.environ.get("PORT", "none"))
"""
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "init"},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "first", "image": image, "command": ["sh", "-c",
                 "sleep 1; echo first >> /work/order; echo data > /data/x; echo init-one"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"},
                                  {"name": "pvc", "mountPath": "/data"}]},
                {"name": "second", "image": image,
                 "command": ["sh", "-c", "echo second >> /work/order"],
                 "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            ],
            "containers": [{
                "name": "main", "image": image, "command": ["python3", "-c", main],
                "workingDir": "/work",
                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                          "key": "token"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                            "fieldPath": "metadata.name"}}},
                        {"name": "POD_NS", "valueFrom": {"fieldRef": {
                            "fieldPath": "metadata.namespace"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {
                            "fieldPath": "status.podIP"}}}],
                "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                "volumeMounts": [{"name": "work", "mountPath": "/work"},
                                 {"name": "sec", "mountPath": "/secret", "readOnly": True},
                                 {"name": "conf", "mountPath": "/config"},
                                 {"name": "pvc", "mountPath": "/data"}],
            }],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "sec", "secret": {"secretName": "creds", "defaultMode": 0o400,
                                           "items": [{"key": "token", "path": "tok"}]}},
                {"name": "conf", "configMap": {"name": "cfg"}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "models"}},
            ],
        },
    }
    cluster.apply([pod], ns)
    phase = wait_for(lambda: (cluster.pod(ns, "init") or {}).get("status", {}).get("phase")
                     in ("Succeeded", "Failed") and cluster.pod(ns, "init"), 90,
                     what="init pod finished")
    logs = cluster.kubectl("logs", "-n", ns, "init", "-c", "main").stdout
    assert phase["status"]["phase"] == "Succeeded", logs + dump_debug(cluster, ns)
    assert "order: ['first', 'second']" in logs
    assert "token-env: s3cr3t mode: fast" in logs
    assert f"pod: init {ns} {phase['status']['podIP']}" in logs
    assert phase["status"]["podIP"] not in ("", "127.0.0.1")
    assert "port-env: none" in logs  # no $PORT contract: servers use their declared port
    assert "secret-file: s3cr3t 0o400" in logs
    assert "config-file: [x]" in logs
    assert "pvc: data" in logs
    assert "cwd: /work" in logs
    assert "init-one" in cluster.kubectl("logs", "-n", ns, "init", "-c", "first").stdout
    inits = phase["status"]["initContainerStatuses"]
    assert [s["state"]["terminated"]["reason"] for s in inits] == ["Completed", "Completed"]


def test_crash_loop_and_liveness_restart(cluster: StandinCluster, ns: str,
                                         env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    crash = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash"},
             "spec": {"containers": [{"name": "c", "image": image,
                                      "command": ["sh", "-c", "echo dying; exit 2"]}]}}
    live = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "live"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": image, "command": ["python3", "-u", "-c", SERVER_PY],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 9},
                                  "periodSeconds": 1, "failureThreshold": 2},
                "ports": [{"containerPort": 8080}]}]}}
    # nothing listens on port 9 at the pod's address -> restarts
    cluster.apply([crash, live], ns)

    def crash_state() -> dict[str, Any] | None:
        pod = cluster.pod(ns, "crash") or {}
        cs = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        if cs.get("restartCount", 0) >= 2 and \
                cs.get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
            return cs
        return None

    cs = wait_for(crash_state, 90, what="CrashLoopBackOff")
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert "dying" in cluster.kubectl("logs", "-n", ns, "crash").stdout
    wait_for(lambda: ((cluster.pod(ns, "live") or {}).get("status", {}).get(
        "containerStatuses") or [{}])[0].get("restartCount", 0) >= 1, 60,
        what="liveness restart")
    assert "Killing" in {e["reason"] for e in cluster.events(ns)}


def test_unschedulable_pod_and_deletion(cluster: StandinCluster, ns: str,
                                        env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    big = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
           "spec": {"containers": [{"name": "c", "image": image,
                                    "resources": {"requests": {"cpu": "500"}}}]}}
    sleeper = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
               "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
                   "name": "c", "image": image, "command": ["sleep", "300"]}]}}
    cluster.apply([big, sleeper], ns)

    def unschedulable() -> bool:
        conds = ((cluster.pod(ns, "big") or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "PodScheduled" and c["status"] == "False"
                   and c.get("reason") == "Unschedulable" for c in conds)

    wait_for(unschedulable, 30, what="PodScheduled=False")
    assert "FailedScheduling" in {e["reason"] for e in cluster.events(ns)}
    wait_for(lambda: (cluster.pod(ns, "sleeper") or {}).get("status", {}).get("phase")
             == "Running", 60, what="sleeper running")
    uid = cluster.pod(ns, "sleeper")["metadata"]["uid"]  # type: ignore[index]
    wait_for(lambda: any(uid[:8] in n for n in cluster.podman_ps()), 30,
             what="the sleeper's container")
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", ns, "sleeper")
    # --init makes `sleep` honour SIGTERM: well before the 5 s grace period + podman overhead
    wait_for(lambda: not any(uid[:8] in n for n in cluster.podman_ps()), 30,
             what="container stopped after pod deletion")
    assert time.monotonic() - t0 < 25, dump_debug(cluster, ns)


def test_a_deleted_pod_leaves_the_endpoints_at_once_and_stops_after_its_prestop_sleep(
        cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    """The kubelet's order on deletion: the endpoints drop the terminating pod while its
    preStop hook runs, and SIGTERM comes after the hook: the window in which an ingress
    still sends it requests is served (what the agent's `drain_seconds` relies on)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "drain", "labels": {
        "app": "drain"}}, "spec": {"terminationGracePeriodSeconds": 9, "containers": [{
            "name": "c", "image": env["HARNESS_BASE_IMAGE"], "command": ["sleep", "300"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "lifecycle": {"preStop": {"sleep": {"seconds": 6}}}}]}}
    cluster.apply([pod, service("drain")], ns)
    wait_for(lambda: endpoints(cluster, ns, "drain")[0], 60, what="the pod in the endpoints")
    uid = cluster.pod(ns, "drain")["metadata"]["uid"]  # type: ignore[index]
    cluster.kubectl("delete", "pod", "-n", ns, "drain", "--wait=false")
    wait_for(lambda: endpoints(cluster, ns, "drain") == ([], []), 5,
             what="the terminating pod out of the endpoints")
    assert any(uid[:8] in n for n in cluster.podman_ps()), "stopped before its preStop sleep"
    assert "Killing" in {e["reason"] for e in cluster.events(ns)}
    wait_for(lambda: not any(uid[:8] in n for n in cluster.podman_ps()), 30,
             what="the container stopped after the sleep")


def test_progress_deadline_exceeded(cluster: StandinCluster, ns: str,
                                    env: dict[str, str]) -> None:
    dep = server_deployment("stuck", f"{env['HARNESS_REGISTRY']}/no/such-image:1",
                            progressDeadlineSeconds=4)
    cluster.apply([dep], ns)
    res = cluster.kubectl("rollout", "status", "-n", ns, "deploy/stuck", "--timeout=60s",
                          check=False)
    assert res.returncode != 0
    assert "exceeded its progress deadline" in res.stderr + res.stdout
    d = cluster.client.get("deployments", ns, "stuck") or {}
    conds = {c["type"]: c for c in d["status"]["conditions"]}
    assert conds["Progressing"]["status"] == "False"
    assert conds["Progressing"]["reason"] == "ProgressDeadlineExceeded"
    assert conds["Available"]["status"] == "False"


def http(url: str, host: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_ingress_routing(cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    cluster.apply([server_deployment("a", image, "A"), service("a"),
                   server_deployment("b", image, "B"), service("b"),
                   server_deployment("never", image, "NEVER", delay=3600), service("never")], ns)
    backend = lambda svc: {"service": {"name": svc, "port": {"number": 80}}}  # noqa: E731
    cluster.apply([
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "rewrite", "annotations": {
             "nginx.ingress.kubernetes.io/rewrite-target": "/$2"}},
         "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [
             {"path": f"/{ns}/dep-a(/|$)(.*)", "pathType": "ImplementationSpecific",
              "backend": backend("a")},
             {"path": f"/{ns}/dep-never(/|$)(.*)", "pathType": "ImplementationSpecific",
              "backend": backend("never")}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "plain"},
         "spec": {"ingressClassName": "nginx", "rules": [
             {"http": {"paths": [
                 {"path": f"/{ns}/exact", "pathType": "Exact", "backend": backend("b")},
                 {"path": f"/{ns}/pre", "pathType": "Prefix", "backend": backend("b")}]}},
             {"host": f"{ns}.example.test", "http": {"paths": [
                 {"path": "/", "pathType": "Prefix", "backend": backend("a")}]}}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "other-class"},
         "spec": {"ingressClassName": "traefik", "rules": [{"http": {"paths": [
             {"path": f"/{ns}/other", "pathType": "Prefix", "backend": backend("b")}]}}]}},
    ], ns)
    for d in ("a", "b"):
        cluster.kubectl("rollout", "status", "-n", ns, f"deploy/{d}", "--timeout=90s")
    url = cluster.ingress_url
    wait_for(lambda: http(f"{url}/{ns}/dep-a/predict?x=1") == (200, "A /predict?x=1\n"), 30,
             what="rewrite-target routing")
    # endpoints and nginx reloads follow each Deployment on their own, and a readiness probe
    # that times out on a loaded 2-core machine briefly takes a pod out: each expectation is
    # awaited (bounded) rather than sampled once
    def expect(path: str, want: Any, host: str | None = None, status_only: bool = False) -> None:
        def check() -> bool:
            got = http(f"{url}{path}", host=host) if host else http(f"{url}{path}")
            return (got[0] if status_only else got) == want

        wait_for(check, 30, what=f"{path} -> {want!r}")

    expect(f"/{ns}/exact", (200, f"B /{ns}/exact\n"))
    assert http(f"{url}/{ns}/dep-a")[1] == "A /\n"
    assert http(f"{url}/{ns}/dep-never/x")[0] == 503
    expect(f"/{ns}/exact", (200, f"B /{ns}/exact\n"))
    assert http(f"{url}/{ns}/exact/more")[0] == 404
    expect(f"/{ns}/pre/x", (200, f"B /{ns}/pre/x\n"))
    expect(f"/{ns}/pre", (200, f"B /{ns}/pre\n"))
    assert http(f"{url}/{ns}/prefix")[0] == 404
    expect("/anything", (200, "A /anything\n"), host=f"{ns}.example.test")
    assert http(f"{url}/{ns}/other")[0] == 404
    ing = cluster.client.get("ingresses", ns, "rewrite") or {}
    assert ing["status"]["loadBalancer"]["ingress"][0]["ip"] == "127.0.0.1"
    # scale to zero: 503 until a pod is ready again
    cluster.kubectl("scale", "-n", ns, "deploy/a", "--replicas=0")
    wait_for(lambda: http(f"{url}/{ns}/dep-a/x")[0] == 503, 30, what="503 after scale to 0")


def test_openshift_route(cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    cluster.apply([server_deployment("r", env["HARNESS_BASE_IMAGE"], "R"), service("r")], ns)
    cluster.apply([{"apiVersion": "route.openshift.io/v1", "kind": "Route",
                    "metadata": {"name": "r", "annotations": {
                        "haproxy.router.openshift.io/rewrite-target": "/"}},
                    "spec": {"host": "apps.example.test", "path": f"/{ns}/dep-r",
                             "to": {"kind": "Service", "name": "r"},
                             "port": {"targetPort": "http"}}}], ns)
    cluster.kubectl("rollout", "status", "-n", ns, "deploy/r", "--timeout=90s")
    wait_for(lambda: http(f"{cluster.ingress_url}/{ns}/dep-r/predict",
                          host="apps.example.test") == (200, "R /predict\n"), 30,
             what="route routing")
    route = cluster.client.get("routes", ns, "r") or {}
    assert route["status"]["ingress"][0]["conditions"][0]["type"] == "Admitted"


def test_failed_init_container_fails_the_pod(cluster: StandinCluster, ns: str,
                                             env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]
    cluster.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "initfail"},
                    "spec": {"restartPolicy": "Never",
                             "initContainers": [{"name": "i", "image": image,
                                                 "command": ["sh", "-c", "exit 4"]}],
                             "containers": [{"name": "main", "image": image,
                                             "command": ["true"]}]}}], ns)
    pod = wait_for(lambda: (cluster.pod(ns, "initfail") or {}).get("status", {}).get("phase")
                   == "Failed" and cluster.pod(ns, "initfail"), 60, what="pod Failed")
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "False"
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == \
        "PodInitializing"


def test_termination_messages(cluster: StandinCluster, ns: str, env: dict[str, str]) -> None:
    image = env["HARNESS_BASE_IMAGE"]

    def pod(name: str, script: str, **extra: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "containers": [
                    {"name": "c", "image": image, "command": ["sh", "-c", script], **extra}]}}

    cluster.apply([pod("file", "echo -n done-ok > /dev/termination-log"),
                   pod("custom", "echo -n custom > /tmp/msg",
                       terminationMessagePath="/tmp/msg"),
                   pod("fallback", "echo last words; exit 3",
                       terminationMessagePolicy="FallbackToLogsOnError")], ns)

    def message(name: str) -> str | None:
        p = cluster.pod(ns, name) or {}
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            return None
        return str(p["status"]["containerStatuses"][0]["state"]["terminated"].get("message"))

    assert wait_for(lambda: message("file"), 60) == "done-ok"
    assert wait_for(lambda: message("custom"), 60) == "custom"
    assert "last words" in wait_for(lambda: message("fallback"), 60)

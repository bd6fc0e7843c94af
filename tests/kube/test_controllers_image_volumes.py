"""Image volumes on the stand-in's podman node: pulled with the pod's credentials, read-only.

A stand-in reporting Kubernetes 1.35 (`KUBE_STANDIN_VERSION`); the model is
pushed by the agent's own code (`agent.images.modelpack`) to the harness's
basic-auth TLS registry, so the kubelet needs the pod's imagePullSecrets to
mount it, as a real one does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.images.layer import DirectorySource
from agent.images.modelpack import push_model_artifact
from agent.images.naming import parse_reference
from agent.images.settings import ImageSettings, RegistryCredentials
from agent.plugins.kubernetes.model_volume import pinned
from tests.fixtures.harness import harness_down
from tests.fixtures.kube import running_cluster
from tools.kube.controllers.testing import StandinCluster, dump_debug, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(env: dict[str, str]) -> Iterator[StandinCluster]:
    yield from running_cluster(env, KUBE_STANDIN_VERSION="1.35.0")


def _push_model(env: dict[str, str], tmp: Path) -> str:
    if not env.get("HARNESS_REGISTRY_TLS"):
        harness_down("no HARNESS_REGISTRY_TLS")
    model = tmp / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.joblib").write_bytes(b"weights " + uuid.uuid4().hex.encode())
    (model / "sub" / "config.yaml").write_text("threshold: 0.5\n")
    settings = ImageSettings(
        ca_bundle=Path(env["HARNESS_CA_CERT"]),
        credentials=RegistryCredentials(provider="basic",
                                        username=env["HARNESS_REGISTRY_TLS_USER"],
                                        password=env["HARNESS_REGISTRY_TLS_PASSWORD"],
                                        hosts=[env["HARNESS_REGISTRY_TLS"]]))
    target = parse_reference(f"{env['HARNESS_REGISTRY_TLS']}/volumes/m-{uuid.uuid4().hex[:6]}")
    with DirectorySource(model) as source:
        pushed = push_model_artifact(settings, target, source, {}, lambda *a, **k: None)
    # what the agent renders: the manifest by digest (`repo@sha256:...`), not the mv- tag
    reference = pinned(f"{pushed.volume}@{pushed.digest}")
    assert reference.endswith(f"@{pushed.digest}") and ":mv-" not in reference
    return reference


def _pod(name: str, image: str, volume: str, secret: bool,
         policy: str = "IfNotPresent") -> dict[str, object]:
    script = ("import os; print(open('/mnt/model/model.joblib').read()); "
              "print(open('/mnt/model/sub/config.yaml').read().strip())\n"
              "try:\n    open('/mnt/model/new', 'w')\nexcept OSError as e:\n"
              "    print('write refused:', e.strerror)")
    spec: dict[str, object] = {
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": image, "command": ["python3", "-c", script],
                        "volumeMounts": [{"name": "model", "mountPath": "/mnt/model"}]}],
        "volumes": [{"name": "model", "image": {"reference": volume,
                                                "pullPolicy": policy}}]}
    if secret:
        spec["imagePullSecrets"] = [{"name": "regcred"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_image_volume_is_pulled_with_the_pods_secret_and_mounted_read_only(
        cluster: StandinCluster, ns: str, env: dict[str, str], tmp_path: Path) -> None:
    volume = _push_model(env, tmp_path)
    cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns,
                    f"--docker-server={env['HARNESS_REGISTRY_TLS']}",
                    f"--docker-username={env['HARNESS_REGISTRY_TLS_USER']}",
                    f"--docker-password={env['HARNESS_REGISTRY_TLS_PASSWORD']}")
    cluster.apply([_pod("with", env["HARNESS_BASE_IMAGE"], volume, secret=True),
                   # like a kubelet, a present image is not pulled again (nor are credentials
                   # checked) unless the policy says Always
                   _pod("without", env["HARNESS_BASE_IMAGE"], volume, secret=False,
                        policy="Always")], ns)
    cached = _pod("cached", env["HARNESS_BASE_IMAGE"], volume, secret=False)
    try:
        wait_for(lambda: (cluster.pod(ns, "with") or {}).get("status", {}).get("phase")
                 == "Succeeded", 120, what="pod with the secret Succeeded")
        logs = cluster.kubectl("logs", "-n", ns, "with").stdout
        assert "weights " in logs and "threshold: 0.5" in logs
        assert "write refused: Read-only file system" in logs

        # the node-cache exposure docs/security.md describes: with IfNotPresent, a pod
        # without pull secrets naming the same reference mounts the node's copy
        cluster.apply([cached], ns)
        wait_for(lambda: (cluster.pod(ns, "cached") or {}).get("status", {}).get("phase")
                 == "Succeeded", 120, what="pod without secret on a cached image Succeeded")
        assert "weights " in cluster.kubectl("logs", "-n", ns, "cached").stdout

        def refused() -> bool:
            return any(e["reason"] == "Failed" and volume in e["message"]
                       and e["involvedObject"]["name"] == "without"
                       for e in cluster.events(ns))

        wait_for(refused, 60, what="a Failed event for the pull without credentials")
        pod = cluster.pod(ns, "without") or {}
        assert pod["status"]["phase"] == "Pending"
        assert all(s["state"].get("waiting", {}).get("reason") == "ContainerCreating"
                   for s in pod["status"].get("containerStatuses") or [])
    except BaseException:
        print(dump_debug(cluster, ns))
        raise

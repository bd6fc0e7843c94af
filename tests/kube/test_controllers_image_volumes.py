"""Image volumes on the stand-in's podman node: pulled with the pod's credentials, read-only.

A stand-in reporting Kubernetes 1.35 (`KUBE_STANDIN_VERSION`); the model is
pushed by the agent's own code (`agent.images.modelpack`) to the harness's
basic-auth TLS registry, so the kubelet needs the pod's imagePullSecrets to
mount it, as a real one does.
"""

from __future__ import annotations

import time
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
from tools.kube.controllers.runtime import Podman
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


@pytest.fixture
def gc_cluster(env: dict[str, str]) -> Iterator[StandinCluster]:
    """A node whose disk is always over the GC threshold: high 1 %, low 0 % (never reached),
    images kept 5 s after first seen, a collection every 2 s."""
    yield from running_cluster(env, KUBE_STANDIN_VERSION="1.35.0",
                               KUBE_STANDIN_IMAGE_GC_HIGH_PERCENT="1",
                               KUBE_STANDIN_IMAGE_GC_LOW_PERCENT="0",
                               KUBE_STANDIN_IMAGE_GC_MIN_AGE_SECONDS="5",
                               KUBE_STANDIN_IMAGE_GC_PERIOD_SECONDS="2")


def test_the_node_collects_an_image_volume_no_pod_uses_and_keeps_what_a_running_pod_uses(
        gc_cluster: StandinCluster, env: dict[str, str], tmp_path: Path) -> None:
    """The kubelet's image GC: a cached model image goes once no pod mounts it, when the
    disk is over the threshold; a running pod's container image and image volume stay,
    and so does a finished pod's volume until the pod is deleted; not freeing enough is
    the Node's FreeDiskSpaceFailed warning."""
    cluster, ns, base = gc_cluster, f"t-{uuid.uuid4().hex[:8]}", env["HARNESS_BASE_IMAGE"]
    cluster.kubectl("create", "namespace", ns)
    kept, collected = _push_model(env, tmp_path / "kept"), _push_model(env, tmp_path / "gone")
    cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", ns,
                    f"--docker-server={env['HARNESS_REGISTRY_TLS']}",
                    f"--docker-username={env['HARNESS_REGISTRY_TLS_USER']}",
                    f"--docker-password={env['HARNESS_REGISTRY_TLS_PASSWORD']}")
    keeper = _pod("keeper", base, kept, secret=True)
    keeper["spec"]["containers"][0]["command"] = [  # type: ignore[index]
        "python3", "-c", "import time; open('/mnt/model/model.joblib'); time.sleep(600)"]
    cluster.apply([keeper, _pod("reader", base, collected, secret=True)], ns)
    podman = Podman(cluster.state_dir)
    try:
        wait_for(lambda: (cluster.pod(ns, "reader") or {}).get("status", {}).get("phase")
                 == "Succeeded", 180, what="the reader pod Succeeded")
        wait_for(lambda: (cluster.pod(ns, "keeper") or {}).get("status", {}).get("phase")
                 == "Running", 120, what="the keeper pod Running")
        assert "weights " in cluster.kubectl("logs", "-n", ns, "reader").stdout
        time.sleep(8)  # past the minimum age (5 s) and a collection (every 2 s)
        assert podman.image_exists(collected), "a finished pod's volume image collected"
        cluster.kubectl("delete", "pod", "reader", "-n", ns)
        wait_for(lambda: not podman.image_exists(collected), 60,
                 what="the reader's volume image collected once no pod mounts it")
        assert podman.image_exists(kept), "the running keeper's image volume was collected"
        assert podman.image_exists(base), "the running keeper's container image was collected"

        def disk_pressure_warning() -> bool:
            return any(e["reason"] == "FreeDiskSpaceFailed" and e["type"] == "Warning"
                       and e["involvedObject"]["kind"] == "Node"
                       # the words of 1.35 (kubernetes#132578), the version of this cluster
                       and "Failed to free sufficient space by deleting unused images"
                       in e["message"]
                       for e in cluster.events("default"))

        wait_for(disk_pressure_warning, 30, what="the Node's FreeDiskSpaceFailed warning")
    except BaseException:
        print(dump_debug(cluster, ns))
        raise
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)

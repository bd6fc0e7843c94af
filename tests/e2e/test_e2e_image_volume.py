"""image-volume delivery: the real MLServer image, unchanged, with the model mounted from an image.

The harness cluster plays a Kubernetes 1.35 (the stand-in's `server-version`
file): `model_delivery: auto` then picks image-volume from the cluster's
`/version`. The same scikit-learn model is served once from a built image (an
agent with `model_delivery: image`) and once from an image volume; both answer
what the model answers locally. A replace pushes only the new model artifact
(no image with the server base is pushed), and deploying a model the registry
already holds uploads nothing. With the cluster back at 1.33 (ImageVolume off
by default), the API server refuses the volume the way a real one does.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_e2e_kubernetes import Agent
from tests.e2e.test_e2e_serving import (
    CASES,
    answers,
    finish,
    local_predictions,
    save_joblib,
    serving_config,
    upload,
)
from tests.fixtures.harness import S3, harness_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CASE = CASES["mlserver"]
VERSION_FILE = harness_dir() / "data" / "kube" / "server-version"


@pytest.fixture
def cluster_version() -> Iterator[Any]:
    """Set the stand-in's reported Kubernetes version for one test (removed afterwards)."""
    def set_version(version: str) -> None:
        VERSION_FILE.write_text(version + "\n")

    try:
        yield set_version
    finally:
        VERSION_FILE.unlink(missing_ok=True)


def _agent(control_plane: Any, cluster: dict[str, str], s3: S3, tmp: Path,
           delivery: str) -> tuple[str, Agent]:
    import yaml

    tmp.mkdir()
    env_id, token = control_plane.create_environment()
    config = serving_config(tmp / "agent.yaml", cluster, s3, control_plane.url, env_id, token)
    data = yaml.safe_load(config.read_text())
    data["plugin"]["kubernetes"]["model_delivery"] = delivery
    config.write_text(yaml.safe_dump(data))
    return env_id, Agent(config, tmp / "agent.log")


def _tags(cluster: dict[str, str]) -> set[str]:
    response = requests.get(f"http://{cluster['HARNESS_REGISTRY']}/v2/e2e-models/tags/list",
                            timeout=10)
    return set(response.json().get("tags") or []) if response.status_code == 200 else set()


def _details(control_plane: Any, env_id: str, deployment: str) -> list[dict[str, Any]]:
    return [{"message": e["message"], **(e.get("details") or e.get("data") or {})}
            for e in control_plane.admin.events(env_id, deployment)]


def test_image_volume_serves_like_a_built_image_and_replaces_without_a_build(
        control_plane: Any, cluster: dict[str, str], s3: S3, tmp_path: Path,
        cluster_version: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.plugins.kubernetes import names
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    cluster_version("1.35.0")
    v1, v2 = CASE.train("v1"), CASE.train("v2")
    run = uuid.uuid4().hex  # a note per run: new model digests, so new artifacts each run
    for version, model in (("v1", v1), ("v2", v2)):
        (save_joblib(model, tmp_path / version) / "NOTES.md").write_text(f"{version} {run}\n")
    uri1, uri2 = upload(s3, tmp_path / "v1"), upload(s3, tmp_path / "v2")

    built_env, built_agent = _agent(control_plane, cluster, s3, tmp_path / "built", "image")
    try:
        result = finish(control_plane, built_env, control_plane.deploy(
            built_env, "built", "iv-v1", uri=uri1, server_profile="mlserver"), built_agent)
        assert result["state"] == "ready", (result, built_agent.log()[-4000:])
        built_answers = answers(CASE, result["data"]["predictionUrl"])
    finally:
        built_agent.stop()
    assert built_answers == local_predictions(v1)

    env_id, agent = _agent(control_plane, cluster, s3, tmp_path / "volume", "auto")
    kube = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                         namespace=cluster["NAMESPACE"]))
    try:
        result = finish(control_plane, env_id, control_plane.deploy(
            env_id, "volume", "iv-v1", uri=uri1, server_profile="mlserver"), agent)
        assert result["state"] == "ready", (result, agent.log()[-4000:])
        url = result["data"]["predictionUrl"]
        assert answers(CASE, url) == built_answers

        name = names.object_name("volume", KubernetesSettings().name_prefix)
        pod = kube.get("apps/v1", "Deployment", name)["spec"]["template"]["spec"]
        server = next(c for c in pod["containers"] if c["name"] == "server")
        assert server["image"] == cluster["HARNESS_MLSERVER_IMAGE"]  # the profile's, unchanged
        volume = next(v for v in pod["volumes"] if "image" in v)
        # pinned by digest: a moved mv- tag cannot swap the mounted model
        assert re.fullmatch(re.escape(f"{cluster['HARNESS_REGISTRY']}/e2e-models@") +
                            "sha256:[0-9a-f]{64}", volume["image"]["reference"])
        mount = next(m for m in server["volumeMounts"] if m["name"] == volume["name"])
        assert mount["readOnly"] is True

        # a replace: only the new model's artifact is pushed, no image is built
        before = _tags(cluster)
        result = finish(control_plane, env_id, control_plane.admin.replace(
            env_id, "volume", {"model": {"id": "iv-v2", "uri": uri2}}), agent)
        assert result["state"] == "ready", (result, agent.log()[-4000:])
        deadline = time.monotonic() + 60  # the ingress drops the old pod's endpoint
        while answers(CASE, url) != local_predictions(v2) and time.monotonic() < deadline:
            time.sleep(1)
        assert answers(CASE, url) == local_predictions(v2)
        new_tags = _tags(cluster) - before
        assert {t[:3] for t in new_tags} == {"mp-", "mv-"}, new_tags  # no m-<hash> image
        messages = [e["message"] for e in _details(control_plane, env_id, "volume")]
        assert not any("building" in m for m in messages), messages

        # the first model again, under another deployment: nothing is uploaded
        result = finish(control_plane, env_id, control_plane.deploy(
            env_id, "volume-again", "iv-v1", uri=uri1, server_profile="mlserver"), agent)
        assert result["state"] == "ready", (result, agent.log()[-4000:])
        events = _details(control_plane, env_id, "volume-again")
        assert any(e["message"].startswith("model artifact reused: ") for e in events), events
        assert not any(e["message"].startswith("model artifact pushed") for e in events)
        assert _tags(cluster) - before == new_tags
        assert answers(CASE, result["data"]["predictionUrl"]) == local_predictions(v1)

        # a model the server cannot load: the rollback mounts the last good model volume again
        v2_volume = kube.get("apps/v1", "Deployment", name)["spec"]["template"]["spec"][
            "volumes"][0]["image"]["reference"]
        broken = tmp_path / "broken"
        broken.mkdir()
        (broken / "model.joblib").write_bytes(b"this is not a pickle " + run.encode())
        result = finish(control_plane, env_id, control_plane.admin.replace(
            env_id, "volume", {"model": {"id": "iv-broken", "uri": upload(s3, broken)},
                               "config": {"rollout_timeout_seconds": 120}}), agent,
            timeout=300)
        assert result["data"]["oldModelInUse"] is True, result
        assert "rolled back: model iv-v2 is still serving" in result["data"]["message"], result
        # reported with its mv- tag for humans, the same digest as the volume
        reported = result["data"]["image"]
        assert ":mv-" in reported and reported.endswith(v2_volume.split("@")[1]), result
        pod = kube.get("apps/v1", "Deployment", name)["spec"]["template"]["spec"]
        assert pod["volumes"][0]["image"]["reference"] == v2_volume
        assert pod["containers"][0]["image"] == cluster["HARNESS_MLSERVER_IMAGE"]
        assert answers(CASE, url) == local_predictions(v2)
    except BaseException:
        print(f"\n----- agent log -----\n{agent.log()[-6000:]}")
        raise
    finally:
        agent.stop()
        kube.close()


def test_a_cluster_before_1_35_refuses_an_image_volume_and_auto_builds_an_image(
        control_plane: Any, cluster: dict[str, str], s3: S3, tmp_path: Path,
        cluster_version: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.errors import AgentError
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    cluster_version("1.34.2")
    kube = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                         namespace=cluster["NAMESPACE"]))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "iv"},
           "spec": {"containers": [{"name": "c", "image": cluster["HARNESS_MLSERVER_IMAGE"],
                                    "volumeMounts": [{"name": "m", "mountPath": "/mnt/m"}]}],
                    "volumes": [{"name": "m", "image": {"reference": "r/m:mv-1"}}]}}
    try:
        with pytest.raises(AgentError) as refused:
            kube.create(pod)
        assert refused.value.status == 422
        assert "spec.volumes[0]: Required value: must specify a volume type" in \
            str(refused.value)
    finally:
        kube.close()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    model = CASE.train("v1")
    env_id, agent = _agent(control_plane, cluster, s3, tmp_path / "old", "auto")
    try:
        result = finish(control_plane, env_id, control_plane.deploy(
            env_id, "old", "old-v1", uri=upload(s3, save_joblib(model, tmp_path / "m")),
            server_profile="mlserver"), agent)
        assert result["state"] == "ready", (result, agent.log()[-4000:])
        assert ":m-" in result["data"]["image"], result  # a built model image
        assert answers(CASE, result["data"]["predictionUrl"]) == local_predictions(model)
    finally:
        agent.stop()


def test_an_image_volume_the_node_cannot_pull_fails_the_action_early_and_says_why(
        control_plane: Any, cluster: dict[str, str], s3: S3, tmp_path: Path,
        cluster_version: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent pushes the artifact to the harness's basic-auth TLS registry with its own
    login, but the pods get no imagePullSecret (ops forgot `image_pull_secrets`): the
    kubelet's pull is refused before any container exists, so the containers only say
    ContainerCreating. The action fails after `fail_fast_seconds` (30 here), not at the
    rollout deadline (300), naming the volume and the kubelet's reason, without the
    password."""
    import yaml

    for key in ("HARNESS_REGISTRY_TLS", "HARNESS_REGISTRY_TLS_USER",
                "HARNESS_REGISTRY_TLS_PASSWORD", "HARNESS_CA_CERT"):
        assert cluster.get(key), f"{key} missing from the harness env"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3.region)
    cluster_version("1.35.0")
    model = tmp_path / "model"
    (save_joblib(CASE.train("v1"), model) / "NOTES.md").write_text(uuid.uuid4().hex)
    uri = upload(s3, model)

    env_id, token = control_plane.create_environment()
    config = serving_config(tmp_path / "agent.yaml", cluster, s3, control_plane.url, env_id,
                            token)
    data = yaml.safe_load(config.read_text())
    data["plugin"]["kubernetes"]["model_delivery"] = "image-volume"
    password = cluster["HARNESS_REGISTRY_TLS_PASSWORD"]
    data["images"] = {
        "builder": "direct",
        "generated_image_repository": f"{cluster['HARNESS_REGISTRY_TLS']}/e2e-private",
        "credentials": {"provider": "basic", "username": cluster["HARNESS_REGISTRY_TLS_USER"],
                        "password": password}}
    data["tls"] = {"ca_bundle": cluster["HARNESS_CA_CERT"]}
    config.write_text(yaml.safe_dump(data))
    agent = Agent(config, tmp_path / "agent.log")
    try:
        started = time.monotonic()
        result = finish(control_plane, env_id, control_plane.deploy(
            env_id, "private", "p-v1", uri=uri, server_profile="mlserver"), agent)
        elapsed = time.monotonic() - started
        assert result["status"] == "failing", result
        error = str(result.get("error") or result)
        assert "image volume model cannot be pulled (ErrImagePull: Failed to pull image" \
            in error, error
        assert f"{cluster['HARNESS_REGISTRY_TLS']}/e2e-private@sha256:" in error, error
        assert password not in error and password not in agent.log()
        # behaviour, not speed: the fail-fast path (30 s) and not the 300 s rollout deadline
        assert elapsed < 200, (elapsed, error)
        assert "not available after" not in error, error
    finally:
        agent.stop()

"""The image question in one place: delivery mode, image resolution, the fetch-model piece."""

from __future__ import annotations

from typing import Any

import pytest

from agent.artifacts.settings import ArtifactSettings
from agent.config import Settings
from agent.errors import InvalidActionError
from agent.images import resolve_image
from agent.images.delivery import DeliveryMode, check_delivery
from agent.images.fetcher import FORWARDED_SETTINGS, fetcher_env
from agent.images.kaniko import render_build_job
from agent.images.settings import ImageSettings
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.profiles import resolve_profile
from agent.plugins.kubernetes.settings import KubernetesSettings


def _spec(**model: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"id": "d1", "model": {"id": "m1", **model}})


def _settings(builder: str, delivery: str = "auto") -> Settings:
    return Settings.model_validate({
        "images": {"builder": builder},
        "plugin": {"kubernetes": {"model_delivery": delivery, "agent_image": "agent:1"}}})


def _resolve(spec: DeploymentSpec, settings: Settings, kube: Any = None) -> Any:
    events: list[str] = []
    profile = resolve_profile(spec, settings.plugin.kubernetes)
    delivery = resolve_image(spec, profile, settings, lambda m, *a, **k: events.append(m),
                             kube=kube)
    return delivery, events


def test_ready_image_is_used_as_named_in_every_mode() -> None:
    for builder, mode in (("none", "storage-initializer"), ("kaniko", "auto"), ("direct", "image")):
        delivery, events = _resolve(_spec(image="reg/srv:1", uri="s3://b/k"),
                                    _settings(builder, mode))
        assert (delivery.mode, delivery.image, events) == (DeliveryMode.IMAGE, "reg/srv:1", [])


def test_storage_initializer_runs_the_base_image_without_building() -> None:
    delivery, events = _resolve(_spec(uri="s3://user:pw@b/k?sig=x"), _settings("none"))
    assert delivery.mode is DeliveryMode.STORAGE_INITIALIZER
    assert delivery.image == "docker.io/seldonio/mlserver:1.7.1"
    assert events and "pw" not in events[0] and "sig=x" not in events[0]


def test_image_mode_without_a_builder_is_an_invalid_action() -> None:
    with pytest.raises(InvalidActionError, match=r"images\.builder is none"):
        _resolve(_spec(uri="s3://b/k"), _settings("none", "image"))
    with pytest.raises(InvalidActionError, match=r"images\.builder=direct only"):
        _resolve(_spec(uri="s3://b/k"), _settings("kaniko"))  # no cluster: filesystem plugin


def test_delivery_rules_per_mode() -> None:
    si = DeliveryMode.STORAGE_INITIALIZER
    with pytest.raises(InvalidActionError, match="file:// paths live on the agent's disk"):
        check_delivery(_spec(uri="file:///m"), si, "base", "agent:1")
    check_delivery(_spec(uri="file:///m"), DeliveryMode.IMAGE, "base", None)
    with pytest.raises(InvalidActionError, match=r"needs plugin\.kubernetes\.agent_image"):
        check_delivery(_spec(uri="s3://b/k"), si, "base", None)
    check_delivery(_spec(uri="pvc://claim/m"), si, "base", None)  # mounted, nothing to run
    with pytest.raises(InvalidActionError, match="no base image"):
        check_delivery(_spec(uri="s3://b/k"), DeliveryMode.IMAGE, None, None)


ARTIFACTS = ArtifactSettings(
    s3_endpoint_url="http://s3:9000", s3_region="eu-west-1", s3_addressing_style="path",
    gcs_endpoint_url="http://gcs:4443", mlflow_tracking_uri="http://mlflow:5000",
    max_archive_bytes=1024, max_archive_files=10, max_archive_ratio=20.0,
    blocked_networks=["169.254.0.0/16", "10.0.0.0/8"], allowed_networks=["10.1.2.3/32"])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])
            if e["name"].startswith("MGMT_AGENT_ARTIFACTS__")}


def test_storage_initializer_and_kaniko_fetch_with_the_same_settings_and_secret() -> None:
    """Both in-cluster fetches get every forwarded artifact setting (Kaniko used to get 3 of 7)."""
    env = fetcher_env(ARTIFACTS)
    assert len(env) == len(FORWARDED_SETTINGS) == 10
    assert env["MGMT_AGENT_ARTIFACTS__BLOCKED_NETWORKS"] == '["169.254.0.0/16", "10.0.0.0/8"]'
    assert env["MGMT_AGENT_ARTIFACTS__MAX_ARCHIVE_RATIO"] == "20.0"
    spec = _spec(uri="s3://b/k", credentials_secret="creds", digest="sha256:" + "a" * 64)
    k8s = KubernetesSettings(model_delivery="storage-initializer", agent_image="agent:1")
    pod = render(spec, k8s, "base:1", "e", fetcher_env=env)[0]["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    job = render_build_job(destination="r.io/m:m-1", base_image="base:1", model_uri="s3://b/k",
                           model_path="/mnt/models", images=ImageSettings(), namespace="ml",
                           labels={}, artifact_env=env, model_digest=spec.model.digest,
                           model_credentials_secret="creds", deployment_id="d1", model_id="m1")
    fetch = job["spec"]["template"]["spec"]["initContainers"][0]
    assert _env(init) == _env(fetch) == env
    for container in (init, fetch):
        args = container["args"]
        assert args[0] == "fetch-model" and "--credentials-dir" in args and "--digest" in args
        assert {"name": "model-credentials", "mountPath": args[args.index("--credentials-dir")
                                                              + 1], "readOnly": True} \
            in container["volumeMounts"]


def test_the_tls_ca_is_mounted_into_both_fetchers_and_the_kaniko_executor() -> None:
    """tls.ca_config_map: the fetch-model containers read it through MGMT_AGENT_TLS__CA_BUNDLE
    (added to their roots); Kaniko finds it in SSL_CERT_DIR (/kaniko/ssl/certs), next to the
    image's own roots."""
    tls = Settings.model_validate({"tls": {"ca_secret": "cas", "ca_key": "root.pem"}}).tls
    env = fetcher_env(ArtifactSettings(), tls)
    assert dict(env) == {"MGMT_AGENT_TLS__CA_BUNDLE": "/etc/management-agent/ca/ca.crt"}
    k8s = KubernetesSettings(model_delivery="storage-initializer", agent_image="agent:1")
    pod = render(_spec(uri="s3://b/k"), k8s, "base:1", "e", fetcher_env=env)[0]["spec"][
        "template"]["spec"]
    job = render_build_job(destination="r.io/m:m-1", base_image="base:1", model_uri="s3://b/k",
                           model_path="/mnt/models", images=ImageSettings(), namespace="ml",
                           labels={}, artifact_env=env)["spec"]["template"]["spec"]
    volume = {"name": "agent-ca", "secret": {"secretName": "cas",
                                             "items": [{"key": "root.pem", "path": "ca.crt"}]}}
    for spec in (pod, job):
        assert volume in spec["volumes"]
        assert {"name": "agent-ca", "mountPath": "/etc/management-agent/ca", "readOnly": True} \
            in spec["initContainers"][0]["volumeMounts"]
    assert {"name": "agent-ca", "mountPath": "/kaniko/ssl/certs/management-agent-ca.crt",
            "subPath": "ca.crt", "readOnly": True} in job["containers"][0]["volumeMounts"]
    assert "--registry-certificate=r.io=/kaniko/ssl/certs/management-agent-ca.crt" in \
        job["containers"][0]["args"]  # Kaniko appends it to the system pool for that registry
    assert fetcher_env(ArtifactSettings(), Settings().tls).ca_volume is None


def test_build_job_carries_the_plugin_label_set() -> None:
    job = render_build_job(destination="r.io/m:m-1", base_image="base:1", model_uri="s3://b/k",
                           model_path="/mnt/models", images=ImageSettings(), namespace="ml",
                           labels={}, deployment_id="d1", model_id="m1")
    labels = job["metadata"]["labels"]
    assert labels[names.LABEL_MANAGED_BY] == "management-agent"
    assert labels[names.LABEL_DEPLOYMENT_ID] == "d1" and labels[names.LABEL_MODEL_ID] == "m1"
    assert labels[names.LABEL_IMAGE_TAG] == "m-1"
    assert not any(key.startswith("io.management-agent/") for key in labels)
    assert job["spec"]["template"]["metadata"]["labels"] == labels

"""Pure rendering of deployments into Kubernetes objects; every object validated strictly."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from agent.errors import InvalidActionError
from agent.images.delivery import DeliveryMode, delivery_mode
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import modelsecret, names
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.settings import KubernetesSettings
from agent.plugins.kubernetes.validation import is_quantity

K8S_VERSION = "1.33.0"


def validate(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        if obj["kind"] in ("Route", "HTTPRoute"):
            continue  # CRDs: no schema in kubernetes-validate; checked structurally elsewhere
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def spec(**extra: Any) -> DeploymentSpec:
    data: dict[str, Any] = {"id": "dep-1", "model": {"id": "model-1", "image": "reg/img:1"}}
    data.update(extra)
    return DeploymentSpec.model_validate(data)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def settings(**extra: Any) -> KubernetesSettings:
    return KubernetesSettings.model_validate({"namespace": "models", **extra})


def test_minimal_render_deployment_service_ingress() -> None:
    objects = render(spec(), settings(), "reg/img:1", "env-1")
    validate(objects)
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "Ingress"]
    deployment = objects[0]
    assert deployment["metadata"]["name"] == "mlops-dep-1"
    assert deployment["metadata"]["namespace"] == "models"
    body = deployment["spec"]
    assert body["replicas"] == 1
    assert body["progressDeadlineSeconds"] == 840
    assert body["strategy"]["rollingUpdate"] == {"maxSurge": "30%", "maxUnavailable": "10%"}
    assert body["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prediction-server", "app.kubernetes.io/instance": "dep-1"}
    pod = body["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == "reg/img:1"
    assert server["ports"][0] == {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/v2/models/dep-1/ready", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert server["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    annotations = body["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8082"
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["MLOPS_DEPLOYMENT_ID"] == "dep-1" and env["MLOPS_MODEL_ID"] == "model-1"
    assert env["MLSERVER_MODEL_NAME"] == "dep-1"
    service = objects[1]
    assert service["spec"]["selector"] == body["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_a_stopping_server_goes_on_serving_until_the_ingress_has_dropped_it() -> None:
    """Endpoints removal and SIGTERM race: without the preStop sleep, a request the ingress
    sends in that moment is reset (a 502 a replace test once saw)."""
    pod = render(spec(), settings(), "reg/img:1", "env-1")[0]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] < \
        pod["terminationGracePeriodSeconds"]  # the API server refuses a longer sleep
    off = render(spec(), settings(drain_seconds=0), "reg/img:1", "env-1")
    validate(off)
    assert "lifecycle" not in off[0]["spec"]["template"]["spec"]["containers"][0]


def test_labels_and_annotations_carry_ids() -> None:
    long_model = "Model/With Spaces:" + "x" * 100
    objects = render(spec(model={"id": long_model, "image": "i"}), settings(), "i", "Env 1")
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[names.LABEL_MANAGED_BY] == "management-agent"
        assert labels[names.LABEL_DEPLOYMENT_ID] == "dep-1"
        assert labels[names.LABEL_INSTANCE] == "dep-1"
        assert len(labels[names.LABEL_MODEL_ID]) <= 63
        assert labels[names.LABEL_VERSION] == labels[names.LABEL_MODEL_ID]
        assert labels[names.LABEL_ENVIRONMENT_ID] == names.label_value("Env 1")
        assert obj["metadata"]["annotations"][names.ANNOTATION_MODEL_ID] == long_model
        assert obj["metadata"]["annotations"][names.ANNOTATION_ENVIRONMENT_ID] == "Env 1"
    validate(objects)


def test_label_values_and_names() -> None:
    assert names.label_value("ok-value_1.2") == "ok-value_1.2"
    for raw in ["a/b c", "-x-", "x" * 64, "___", "Ü"]:
        value = names.label_value(raw)
        assert len(value) <= 63
        assert names._LABEL_VALUE.match(value), value
    assert names.label_value("x" * 64) != names.label_value("x" * 65)
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    name_a, name_b = names.object_name(long_a), names.object_name(long_b)
    assert name_a != name_b and len(name_a) <= 63 and len(name_b) <= 63
    assert names.object_name("7up", prefix="") .startswith("d-")
    assert names.object_name("dep", prefix="") == "dep"
    for name in (name_a, names.object_name("7up", prefix="")):
        assert names._DNS_LABEL.match(name), name


def test_long_deployment_id_renders_valid_objects() -> None:
    long_id = "d" + "-abc" * 15 + "z"  # 62 characters: fits a label, not prefix + id
    objects = render(spec(id=long_id), settings(), "i", "e")
    validate(objects)
    assert len(objects[0]["metadata"]["name"]) <= 63
    assert objects[0]["metadata"]["labels"][names.LABEL_DEPLOYMENT_ID] == long_id


def test_options_resources_env_scheduling_security() -> None:
    s = settings(
        service_account_name="predictor", image_pull_secrets=["pull"],
        node_selector={"pool": "gpu"}, tolerations=[{"key": "gpu", "operator": "Exists"}],
        affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        security={"run_as_non_root": False, "run_as_user": 1000, "fs_group": 2000,
                  "read_only_root_filesystem": True},
        rolling_update={"max_surge": 1, "max_unavailable": 0}, progress_deadline_seconds=300,
        extra_labels={"team": "ml"}, pod_annotations={"a": "b"}, prometheus_scrape=False,
    )
    d = spec(replicas=3, env={"FOO": "bar"},
             resources={"requests": {"cpu": "250m", "memory": "512Mi"},
                        "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}})
    objects = render(d, s, "i", "e")
    validate(objects)
    kinds = by_kind(objects)
    dep = kinds["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert dep["spec"]["progressDeadlineSeconds"] == 300
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "FOO", "value": "bar"} in server["env"]
    assert pod["serviceAccountName"] == "predictor"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert "nodeAffinity" in pod["affinity"]
    assert pod["securityContext"]["runAsNonRoot"] is False
    assert pod["securityContext"]["runAsUser"] == 1000
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in server["volumeMounts"]
    assert dep["metadata"]["labels"]["team"] == "ml"
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"a": "b"}
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert "HorizontalPodAutoscaler" not in kinds


def test_default_resources_apply_when_spec_has_none() -> None:
    s = settings(default_resources={"requests": {"cpu": "100m"}})
    server = render(spec(), s, "i", "e")[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"] == {"requests": {"cpu": "100m"}}


def test_hpa_and_pdb() -> None:
    d = spec(resources={"requests": {"cpu": "1"}},
             autoscaling={"min_replicas": 2, "max_replicas": 6, "target_cpu_utilization": 70})
    objects = render(d, settings(), "i", "e")
    validate(objects)
    kinds = by_kind(objects)
    hpa = kinds["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["scaleTargetRef"]["name"] == "mlops-dep-1"
    assert "replicas" not in kinds["Deployment"]["spec"]  # the HPA owns the replica count
    assert kinds["PodDisruptionBudget"]["apiVersion"] == "policy/v1"


def test_no_pdb_for_single_replica_or_when_disabled() -> None:
    assert "PodDisruptionBudget" not in by_kind(render(spec(), settings(), "i", "e"))
    objects = render(spec(replicas=3), settings(pdb={"enabled": False}), "i", "e")
    assert "PodDisruptionBudget" not in by_kind(objects)


def test_hpa_without_cpu_request_is_rejected() -> None:
    d = spec(autoscaling={"min_replicas": 1, "max_replicas": 3})
    with pytest.raises(InvalidActionError, match="autoscaling needs a CPU request"):
        render(d, settings(), "i", "e")
    d = spec(resources={"requests": {"cpu": "1"}},
             autoscaling={"min_replicas": 4, "max_replicas": 3})
    with pytest.raises(InvalidActionError, match="must not exceed"):
        render(d, settings(), "i", "e")


@pytest.mark.parametrize("quantity", ["1", "500m", "1.5Gi", "2e3", ".5", "100Ki", "1E"])
def test_quantities_accepted(quantity: str) -> None:
    assert is_quantity(quantity)
    render(spec(resources={"limits": {"memory": quantity}}), settings(), "i", "e")


@pytest.mark.parametrize("quantity", ["1GB", "-1", "abc", "1.5 Gi", "", "1mi", "0x10"])
def test_bad_quantities_rejected(quantity: str) -> None:
    assert not is_quantity(quantity)
    with pytest.raises(InvalidActionError, match="not a Kubernetes quantity"):
        render(spec(resources={"requests": {"memory": quantity}}), settings(), "i", "e")


def test_invalid_specs_fail_clearly() -> None:
    with pytest.raises(InvalidActionError, match="invalid resource name"):
        render(spec(resources={"requests": {"CPU!": "1"}}), settings(), "i", "e")
    # replicas and the id are checked once, where the spec is parsed
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        spec(replicas=-1)
    with pytest.raises(ValidationError, match="DNS-1123"):
        spec(id="Bad_Name")
    with pytest.raises(InvalidActionError, match="unknown server profile 'nope'"):
        render(spec(server_profile="nope"), settings(), "i", "e")
    with pytest.raises(InvalidActionError, match="env: invalid variable name"):
        render(spec(env={"1 bad": "x"}), settings(), "i", "e")
    with pytest.raises(InvalidActionError, match="scheme ftp:// cannot be served"):
        render(spec(model={"id": "m", "uri": "ftp://host/m"}), settings(), "i", "e")
    with pytest.raises(InvalidActionError, match="rollout_timeout_seconds"):
        render(spec(config={"rollout_timeout_seconds": -5}), settings(), "i", "e")
    with pytest.raises(InvalidActionError, match="no base image"):
        render(spec(model={"id": "m", "uri": "s3://b/k"}, server_profile="custom"),
               settings(), "i", "e")


@pytest.mark.parametrize(("config", "key"), [
    ({"node_selector": "oops"}, "config.node_selector"),
    ({"node_selector": {"pool": ["a"]}}, "config.node_selector.pool"),
    ({"tolerations": {"key": "x"}}, "config.tolerations"),
    ({"run_as_non_root": "maybe"}, "config.run_as_non_root"),
    ({"service_account_name": 5}, "config.service_account_name"),
    ({"rollout_timeout_seconds": True}, "config.rollout_timeout_seconds"),
    ({"rollout_timeout_seconds": float("inf")}, "config.rollout_timeout_seconds"),
    ({"rollout_timeout_seconds": 10**9}, "config.rollout_timeout_seconds"),
    ({"profile": "mlserver"}, "config.profile"),
])
def test_wrong_config_types_name_the_key(config: dict[str, Any], key: str) -> None:
    """A wrong type in spec.config is an invalid action naming the key, not an internal error."""
    with pytest.raises(InvalidActionError, match=rf"deployment dep-1: {re.escape(key)}: "):
        render(spec(config=config), settings(), "i", "e")


def test_config_options_reach_the_pod() -> None:
    d = spec(config={"node_selector": {"pool": "gpu"}, "service_account_name": "reader",
                     "tolerations": [{"key": "gpu", "operator": "Exists"}],
                     "run_as_non_root": False, "someone_elses_key": 1})
    permissive = {"allowed_service_accounts": ["reader"], "allow_security_relaxation": True,
                  "allowed_tolerations": [{"key": "gpu"}]}
    pod = render(d, settings(node_selector={"zone": "a"}, deployment_policy=permissive), "i",
                 "e")[0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"zone": "a", "pool": "gpu"}
    assert pod["serviceAccountName"] == "reader"
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["securityContext"]["runAsNonRoot"] is False


def test_network_policy() -> None:
    s = settings(network_policy={"enabled": True, "allow_from_namespaces": ["monitoring"]})
    objects = render(spec(), s, "i", "e")
    validate(objects)
    policy = by_kind(objects)["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"][names.LABEL_INSTANCE] == "dep-1"
    peers = policy["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
    assert {"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "management-agent"}}} in peers
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {"protocol": "UDP", "port": 53} in policy["egress"][0]["ports"]
    open_egress = settings(network_policy={"enabled": True, "restrict_egress": False})
    assert "egress" not in by_kind(render(spec(), open_egress, "i", "e"))["NetworkPolicy"]["spec"]


def test_monitoring_sidecar_shares_spool() -> None:
    s = settings(monitoring={"enabled": True, "image": "mon:1", "env": {"X": "1"},
                             "resources": {"limits": {"memory": "64Mi"}}})
    objects = render(spec(), s, "i", "e")
    validate(objects)
    pod = objects[0]["spec"]["template"]["spec"]
    server, sidecar = pod["containers"]
    assert sidecar["image"] == "mon:1"
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["MLOPS_DEPLOYMENT_ID"] == "dep-1" and env["MLOPS_MODEL_ID"] == "model-1"
    assert env["X"] == "1"
    assert {"name": "spool", "emptyDir": {}} in pod["volumes"]
    assert sidecar["volumeMounts"] == [{"name": "spool", "mountPath": "/var/spool/mlops"}]
    assert {"name": "spool", "mountPath": "/var/spool/mlops"} in server["volumeMounts"]
    with pytest.raises(InvalidActionError, match=r"monitoring\.image"):
        render(spec(), settings(monitoring={"enabled": True}), "i", "e")


def test_storage_initializer_mode() -> None:
    s = settings(model_delivery="storage-initializer", agent_image="agent:1.0")
    d = spec(model={"id": "m", "uri": "s3://bucket/model", "credentials_secret": "s3-creds"})
    assert delivery_mode(d.model, s.model_delivery) is DeliveryMode.STORAGE_INITIALIZER
    objects = render(d, s, "docker.io/seldonio/mlserver:1.6.1", "e")
    validate(objects)
    pod = objects[0]["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["image"] == "agent:1.0"
    assert init["command"] == ["management-agent"]
    # the URI is read from the deployment's Secret, never written into the pod spec
    assert init["args"] == ["fetch-model", "--uri-from-env", "MODEL_URI", "/mnt/models",
                            "--credentials-dir", "/var/run/secrets/model-credentials"]
    assert init["env"][0] == {"name": "MODEL_URI", "valueFrom": {"secretKeyRef": {
        "name": "mlops-dep-1-model", "key": modelsecret.uri_key("s3://bucket/model")}}}
    assert "s3://bucket/model" not in str(objects[:-1])
    # the agent's fetch step: no root, no capabilities, nothing written outside its volumes
    assert init["securityContext"] == {"allowPrivilegeEscalation": False,
                                       "capabilities": {"drop": ["ALL"]},
                                       "readOnlyRootFilesystem": True}
    assert {"name": "fetch-tmp", "mountPath": "/tmp"} in init["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    secret = objects[-1]
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "mlops-dep-1-model")
    assert modelsecret.decoded(secret) == {modelsecret.uri_key("s3://bucket/model"):
                                           "s3://bucket/model"}
    assert {"name": "model-credentials", "mountPath": "/var/run/secrets/model-credentials",
            "readOnly": True} in init["volumeMounts"]
    server = pod["containers"][0]
    assert server["image"] == "docker.io/seldonio/mlserver:1.6.1"
    assert server["volumeMounts"] == [{"name": "model", "mountPath": "/mnt/models",
                                       "readOnly": True}]
    assert all(m["name"] != "model-credentials" for m in server["volumeMounts"])
    assert {"name": "model", "emptyDir": {}} in pod["volumes"]


def test_storage_initializer_pvc_and_rules() -> None:
    s = settings(model_delivery="storage-initializer")
    d = spec(model={"id": "m", "uri": "pvc://models-claim/iris/v1"})
    pod = render(d, s, "base", "e")[0]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"][0] == {"name": "model", "persistentVolumeClaim": {
        "claimName": "models-claim", "readOnly": True}}
    assert pod["containers"][0]["volumeMounts"][0]["subPath"] == "iris/v1"
    with pytest.raises(InvalidActionError, match="agent_image"):
        render(spec(model={"id": "m", "uri": "s3://b/k"}), s, "base", "e")
    with pytest.raises(InvalidActionError, match="file:// paths live on the agent's disk"):
        render(spec(model={"id": "m", "uri": "file:///models/x"}),
               s.model_copy(update={"agent_image": "a"}), "base", "e")


def test_delivery_mode_auto_follows_the_builder_and_a_ready_image_is_always_image() -> None:
    model = spec(model={"id": "m", "uri": "s3://b/k"}).model
    assert delivery_mode(model, "auto", "none") is DeliveryMode.STORAGE_INITIALIZER
    assert delivery_mode(model, "auto", "direct") is DeliveryMode.IMAGE
    assert delivery_mode(model, "storage-initializer", "direct") is \
        DeliveryMode.STORAGE_INITIALIZER
    ready = spec(model={"id": "m", "uri": "s3://b/k", "image": "reg/img:1"}).model
    assert delivery_mode(ready, "storage-initializer", "none") is DeliveryMode.IMAGE


def test_render_takes_the_mode_the_image_resolution_chose() -> None:
    """`auto` + builder none means storage-initializer: the plugin passes the mode it resolved."""
    s = settings(agent_image="agent:1.0")
    d = spec(model={"id": "m", "uri": "s3://bucket/model"})
    pod = render(d, s, "base:1", "e", mode=DeliveryMode.STORAGE_INITIALIZER)[0]["spec"][
        "template"]["spec"]
    assert pod["initContainers"][0]["name"] == "storage-initializer"
    assert "initContainers" not in render(d, s, "model:1", "e")[0]["spec"]["template"]["spec"]


def test_rendering_is_deterministic_and_restart_changes_template() -> None:
    a = render(spec(), settings(), "i", "e")
    b = render(spec(), settings(), "i", "e")
    assert a == b
    c = render(spec(), settings(), "i", "e", restarted_at="2026-01-01T00:00:00Z")
    template = c[0]["spec"]["template"]["metadata"]
    assert template["annotations"][names.ANNOTATION_RESTARTED_AT] == "2026-01-01T00:00:00Z"
    hash_key = names.LABEL_TEMPLATE_HASH
    assert template["labels"][hash_key] != a[0]["spec"]["template"]["metadata"]["labels"][hash_key]


def test_spec_and_image_recorded_for_rollback() -> None:
    d = spec(env={"A": "1"})
    dep = render(d, settings(), "reg/img@sha256:abc", "e")[0]
    annotations = dep["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_IMAGE] == "reg/img@sha256:abc"
    # only a hash: env values and model URIs stay out of annotations
    assert annotations[names.ANNOTATION_SPEC] == modelsecret.text_hash(
        d.model_dump_json(exclude_defaults=True))
    assert "A" not in annotations[names.ANNOTATION_SPEC]


def test_storage_initializer_gets_the_artifact_settings_and_digest() -> None:
    from agent.artifacts.settings import ArtifactSettings
    from agent.images.fetcher import fetcher_env

    s = settings(model_delivery="storage-initializer", agent_image="agent:1.0")
    d = spec(model={"id": "m", "uri": "s3://models/m/", "digest": "sha256:" + "a" * 64})
    env = fetcher_env(ArtifactSettings(s3_endpoint_url="http://minio:9000",
                                       mlflow_tracking_uri="http://mlflow:5000"))
    objects = render(d, s, "base:1", "env-1", fetcher_env=env)
    validate(objects)
    init = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]
    assert {"name": "MGMT_AGENT_ARTIFACTS__S3_ENDPOINT_URL",
            "value": "http://minio:9000"} in init["env"]
    assert {"name": "MGMT_AGENT_ARTIFACTS__MLFLOW_TRACKING_URI",
            "value": "http://mlflow:5000"} in init["env"]
    assert init["args"][-2:] == ["--digest", "sha256:" + "a" * 64]
    assert fetcher_env(ArtifactSettings()) == {}, "defaults are not repeated"

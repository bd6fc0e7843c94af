"""NetworkPolicy egress of storage-initializer pods: DNS plus the model store, or a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from agent.artifacts.settings import ArtifactSettings
from agent.errors import InvalidActionError
from agent.images.delivery import DeliveryMode
from agent.images.fetcher import fetcher_env
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.settings import KubernetesSettings
from tests.unit.plugins.test_k8s_manifests import by_kind, validate

DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def spec(uri: str) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"id": "dep-1", "model": {"id": "m", "uri": uri}})


def settings(**network_policy: Any) -> KubernetesSettings:
    return KubernetesSettings.model_validate({
        "namespace": "models", "model_delivery": "storage-initializer",
        "agent_image": "reg/agent:1", "network_policy": {"enabled": True, **network_policy}})


def egress(uri: str, s: KubernetesSettings, **artifacts: Any) -> list[dict[str, Any]]:
    objects = render(spec(uri), s, "reg/mlserver:1", "e",
                     fetcher_env=fetcher_env(ArtifactSettings(**artifacts)),
                     mode=DeliveryMode.STORAGE_INITIALIZER)
    validate(objects)
    return list(by_kind(objects)["NetworkPolicy"]["spec"]["egress"])


def refused(uri: str, s: KubernetesSettings, **artifacts: Any) -> str:
    with pytest.raises(InvalidActionError) as caught:
        egress(uri, s, **artifacts)
    return str(caught.value)


def test_an_s3_endpoint_at_an_address_is_allowed_by_itself() -> None:
    rules = egress("s3://models/m1", settings(), s3_endpoint_url="http://10.20.30.40:9000")
    assert rules == [DNS, {"to": [{"ipBlock": {"cidr": "10.20.30.40/32"}}],
                           "ports": [{"protocol": "TCP", "port": 9000}]}]
    v6 = egress("gs://b/m", settings(), gcs_endpoint_url="https://[fd00::5]:4443")
    assert v6[1] == {"to": [{"ipBlock": {"cidr": "fd00::5/128"}}],
                     "ports": [{"protocol": "TCP", "port": 4443}]}


def test_a_store_named_by_host_needs_an_egress_to_entry() -> None:
    message = refused("s3://models/m1", settings(),
                      s3_endpoint_url="http://minio.storage.svc:9000")
    assert "must reach minio.storage.svc:9000 (artifacts.s3_endpoint_url)" in message
    assert "plugin.kubernetes.network_policy.egress_to" in message
    assert "predictionServer.networkPolicy.egressTo" in message
    minio = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}},
             "podSelector": {"matchLabels": {"app": "minio"}}}
    s = settings(egress_to=[{"hosts": ["minio.storage.svc*"], "to": [minio]}])
    rules = egress("s3://models/m1", s, s3_endpoint_url="http://minio.storage.svc:9000")
    assert rules == [DNS, {"to": [minio], "ports": [{"protocol": "TCP", "port": 9000}]}]


def test_public_stores_open_their_port_to_any_address_only_when_ops_say_so() -> None:
    assert "must reach s3.eu-west-1.amazonaws.com:443 (public S3" in refused(
        "s3://models/m1", settings(), s3_region="eu-west-1")
    s = settings(egress_to=[{"hosts": ["*.amazonaws.com", "storage.googleapis.com"]}],
                 extra_egress=[{"ports": [{"protocol": "TCP", "port": 8443}]}])
    s3 = egress("s3://models/m1", s, s3_region="eu-west-1")
    assert s3 == [DNS, {"ports": [{"protocol": "TCP", "port": 443}]},
                  {"ports": [{"protocol": "TCP", "port": 8443}]}]
    assert egress("gs://b/m", s)[1] == {"ports": [{"protocol": "TCP", "port": 443}]}


def test_an_address_in_the_order_is_not_opened_without_ops() -> None:
    """The order chooses http(s)/oci hosts: an address there does not open egress by itself."""
    assert "must reach 10.9.8.7:8080 (the model URI)" in refused(
        "http://10.9.8.7:8080/m.joblib", settings())
    assert "must reach registry.example:443 (the model URI)" in refused(
        "oci://registry.example/models/m:1", settings())
    s = settings(egress_to=[{"hosts": ["10.9.8.*"]}])
    assert egress("http://10.9.8.7:8080/m.joblib", s)[1] == {
        "to": [{"ipBlock": {"cidr": "10.9.8.7/32"}}], "ports": [{"protocol": "TCP", "port": 8080}]}


def test_mlflow_needs_a_known_tracking_server() -> None:
    assert "set artifacts.mlflow_tracking_uri" in refused("models:/m/1", settings())
    rules = egress("models:/m/1", settings(), mlflow_tracking_uri="http://10.1.1.1:5000")
    assert rules[1] == {"to": [{"ipBlock": {"cidr": "10.1.1.1/32"}}],
                        "ports": [{"protocol": "TCP", "port": 5000}]}


def test_no_store_rule_where_no_init_container_fetches() -> None:
    pvc = egress("pvc://claim/m", settings())
    assert pvc == [DNS]
    image = render(DeploymentSpec.model_validate({"id": "d", "model": {"id": "m",
                                                                       "image": "reg/m:1"}}),
                   settings(), "reg/m:1", "e", mode=DeliveryMode.IMAGE)
    assert by_kind(image)["NetworkPolicy"]["spec"]["egress"] == [DNS]
    # open egress, or no NetworkPolicy at all: nothing to check
    open_egress = render(spec("s3://b/m"), settings(restrict_egress=False), "i", "e",
                         mode=DeliveryMode.STORAGE_INITIALIZER)
    assert "egress" not in by_kind(open_egress)["NetworkPolicy"]["spec"]
    off = KubernetesSettings.model_validate({"model_delivery": "storage-initializer",
                                             "agent_image": "reg/agent:1"})
    assert "NetworkPolicy" not in by_kind(render(spec("s3://b/m"), off, "i", "e"))


def test_a_host_pattern_without_ports_does_not_open_the_orders_port_to_every_address() -> None:
    """`hosts: ["*.amazonaws.com"]` with no peers and no ports allows any address: the port
    must not be the order's choice (https://x.amazonaws.com:5432/ would open 5432 to all)."""
    s = settings(egress_to=[{"hosts": ["*.amazonaws.com"]}])
    assert "names port 5432 of x.amazonaws.com" in refused("https://x.amazonaws.com:5432/m", s)
    assert egress("https://x.amazonaws.com/m", s)[1] == {
        "ports": [{"protocol": "TCP", "port": 443}]}
    listed = settings(egress_to=[{"hosts": ["*.amazonaws.com"],
                                  "ports": [{"protocol": "TCP", "port": 5432}]}])
    assert egress("https://x.amazonaws.com:5432/m", listed)[1] == {
        "ports": [{"protocol": "TCP", "port": 5432}]}

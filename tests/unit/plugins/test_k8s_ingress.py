"""Ingress / Route / HTTPRoute rendering, prediction URLs and server profiles."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.ingress import health_url, prediction_url
from agent.plugins.kubernetes.manifests import render
from agent.plugins.kubernetes.profiles import resolve_profile
from agent.plugins.kubernetes.settings import KubernetesSettings


def spec(**extra: Any) -> DeploymentSpec:
    data: dict[str, Any] = {"id": "dep-1", "model": {"id": "m1", "image": "reg/img:1"}}
    data.update(extra)
    return DeploymentSpec.model_validate(data)


def exposure(s: KubernetesSettings, d: DeploymentSpec | None = None) -> dict[str, Any] | None:
    objects = render(d or spec(), s, "i", "e")
    found = [o for o in objects if o["kind"] in ("Ingress", "Route", "HTTPRoute")]
    return found[0] if found else None


def test_nginx_ingress_regex_rewrite_and_host() -> None:
    s = KubernetesSettings(outfacing_url_root="http://models.example.com/pred/",
                           ingress_annotations={"nginx.ingress.kubernetes.io/proxy-body-size": "0"})
    ingress = exposure(s)
    assert ingress is not None
    kubernetes_validate.validate(ingress, "1.33.0", strict=True)
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$2"
    assert annotations["nginx.ingress.kubernetes.io/use-regex"] == "true"
    assert "nginx.ingress.kubernetes.io/force-ssl-redirect" not in annotations
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "0"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "models.example.com"
    path = rule["http"]["paths"][0]
    assert path["path"] == "/pred/dep-1(/|$)(.*)"
    assert path["pathType"] == "ImplementationSpecific"
    assert path["backend"]["service"] == {"name": "mlops-dep-1", "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert "tls" not in ingress["spec"]
    assert prediction_url(spec(), s) == "http://models.example.com/pred/dep-1/v2/models/dep-1/infer"
    assert health_url(spec(), s) == "http://models.example.com/pred/dep-1/v2/models/dep-1/ready"


def test_https_root_gets_tls_and_ssl_redirect() -> None:
    s = KubernetesSettings(outfacing_url_root="https://models.example.com",
                           tls_secret_name="models-tls")
    ingress = exposure(s)
    assert ingress is not None
    kubernetes_validate.validate(ingress, "1.33.0", strict=True)
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/force-ssl-redirect"] \
        == "true"
    assert ingress["spec"]["tls"] == [{"hosts": ["models.example.com"],
                                       "secretName": "models-tls"}]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/dep-1(/|$)(.*)"
    assert prediction_url(spec(), s).startswith("https://models.example.com/dep-1/")


def test_ip_root_has_no_host_and_port_is_kept_in_url() -> None:
    s = KubernetesSettings(outfacing_url_root="http://127.0.0.1:31080/", ingress_class_name=None)
    ingress = exposure(s)
    assert ingress is not None
    kubernetes_validate.validate(ingress, "1.33.0", strict=True)
    assert "host" not in ingress["spec"]["rules"][0]
    assert "ingressClassName" not in ingress["spec"]
    assert prediction_url(spec(), s) == "http://127.0.0.1:31080/dep-1/v2/models/dep-1/infer"


def test_prefix_mode() -> None:
    s = KubernetesSettings(outfacing_url_root="http://h.example/api", ingress_mode="prefix")
    ingress = exposure(s)
    assert ingress is not None
    kubernetes_validate.validate(ingress, "1.33.0", strict=True)
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/api/dep-1" and path["pathType"] == "Prefix"
    assert "nginx.ingress.kubernetes.io/rewrite-target" not in ingress["metadata"]["annotations"]


def test_openshift_route() -> None:
    s = KubernetesSettings(outfacing_url_root="https://apps.ocp.example/models",
                           ingress_mode="openshift-route")
    route = exposure(s)
    assert route is not None
    assert route["apiVersion"] == "route.openshift.io/v1" and route["kind"] == "Route"
    assert route["metadata"]["annotations"]["haproxy.router.openshift.io/rewrite-target"] == "/"
    assert route["spec"]["host"] == "apps.ocp.example"
    assert route["spec"]["path"] == "/models/dep-1"
    assert route["spec"]["to"] == {"kind": "Service", "name": "mlops-dep-1", "weight": 100}
    assert route["spec"]["port"] == {"targetPort": "http"}
    assert route["spec"]["tls"]["termination"] == "edge"
    assert route["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "management-agent"


def test_gateway_httproute() -> None:
    s = KubernetesSettings(outfacing_url_root="http://gw.example/", ingress_mode="gateway",
                           gateway_parent_refs=[{"name": "public", "namespace": "gateways"}])
    route = exposure(s)
    assert route is not None
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "public", "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["gw.example"]
    rule = route["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/dep-1"}}]
    assert rule["filters"][0]["urlRewrite"]["path"] == {
        "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
    assert rule["backendRefs"] == [{"name": "mlops-dep-1", "port": 80}]



def test_gateway_mode_without_parent_refs_is_refused_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="gateway_parent_refs"):
        KubernetesSettings(ingress_mode="gateway")
    with pytest.raises(ValidationError, match="gateway_parent_refs"):
        KubernetesSettings(ingress_mode="gateway", gateway_parent_refs=[])


def test_none_mode_uses_service_url() -> None:
    s = KubernetesSettings(namespace="ml", ingress_mode="none")
    assert exposure(s) is None
    assert prediction_url(spec(), s) == \
        "http://mlops-dep-1.ml.svc.cluster.local/v2/models/dep-1/infer"
    s = KubernetesSettings(namespace="ml", ingress_mode="none", service_port=8000)
    assert prediction_url(spec(), s).startswith("http://mlops-dep-1.ml.svc.cluster.local:8000/")


def test_bad_root_is_rejected() -> None:
    with pytest.raises(InvalidActionError, match="outfacing_url_root"):
        prediction_url(spec(), KubernetesSettings(outfacing_url_root="models.example.com"))


@pytest.mark.parametrize(("profile", "health", "predict"), [
    ("mlserver", "/v2/models/dep-1/ready", "/v2/models/dep-1/infer"),
    ("mlflow-pyfunc", "/ping", "/invocations"),
    ("kserve", "/v1/models/dep-1", "/v1/models/dep-1:predict"),
    ("custom", "/health", "/predict"),
])
def test_builtin_profiles(profile: str, health: str, predict: str) -> None:
    s = KubernetesSettings(outfacing_url_root="http://h.example/", default_server_profile=profile)
    resolved = resolve_profile(spec(), s)
    assert (resolved.health_path, resolved.predict_path, resolved.port) == (health, predict, 8080)
    assert prediction_url(spec(), s) == f"http://h.example/dep-1{predict}"
    objects = render(spec(), s, "i", "e")
    for obj in objects:
        kubernetes_validate.validate(obj, "1.33.0", strict=True)
    server = objects[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == health


def test_mlflow_profile_command_and_non_root_user() -> None:
    s = KubernetesSettings(default_server_profile="mlflow-pyfunc")
    pod = render(spec(), s, "i", "e")[0]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"] == ["mlflow", "models", "serve"]
    assert server["args"][:2] == ["-m", "/mnt/models"] and "8080" in server["args"]
    # the official image's user is root: Pod Security `restricted` needs a numeric non-root one
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000


def test_settings_profiles_and_per_deployment_overrides() -> None:
    s = KubernetesSettings(
        outfacing_url_root="http://h.example/",
        server_profiles={"tiny": {"image": "base:1", "port": 9000, "health_path": "/healthz",
                                  "predict_path": "/predict/{name}", "model_path": "/models"}},
        default_server_profile="tiny",
    )
    resolved = resolve_profile(spec(), s)
    assert resolved.predict_path == "/predict/dep-1" and resolved.port == 9000
    d = spec(config={"port": 9100, "predict_path": "/score", "health_path": "/ok"})
    assert prediction_url(d, s) == "http://h.example/dep-1/score"
    server = render(d, s, "i", "e")[0]["spec"]["template"]["spec"]["containers"][0]
    assert server["ports"][0]["containerPort"] == 9100
    assert server["livenessProbe"]["httpGet"]["path"] == "/ok"
    d = spec(server_profile="kserve")
    assert prediction_url(d, s) == "http://h.example/dep-1/v1/models/dep-1:predict"
    d = spec(config={"server_profile": "mlflow-pyfunc"})
    assert prediction_url(d, s).endswith("/invocations")
    with pytest.raises(InvalidActionError, match="invalid server profile overrides"):
        resolve_profile(spec(config={"port": "eighty"}), s)
    with pytest.raises(InvalidActionError, match="must start with '/'"):
        resolve_profile(spec(config={"predict_path": "score"}), s)

"""Per-platform overlays: identities, credentials and exposure land where they must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_helpers import (
    agent_config,
    example,
    find,
    find_all,
    load_rendered_settings,
    mounts_by_path,
    render,
    render_error,
    volumes_by_name,
)

IRSA = "eks.amazonaws.com/role-arn"
WORKLOAD_IDENTITY = "iam.gke.io/gcp-service-account"


def _agent_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(find(objects, "Deployment")["spec"]["template"]["spec"])


def _service_account(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(objects, "ServiceAccount", name)


def _builder_service_account(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The account that pushes images: the agent's (direct) or the Kaniko Jobs' one."""
    config = agent_config(objects)
    if config["images"]["builder"] == "kaniko":
        return _service_account(objects, config["images"]["kaniko"]["service_account"])
    return _service_account(objects, _agent_pod(objects)["serviceAccountName"])


def _mounted_file(objects: list[dict[str, Any]], path: str) -> tuple[dict[str, Any], str]:
    """(volume, file name inside it) of the agent's mount that holds `path`."""
    pod = _agent_pod(objects)
    mounts = mounts_by_path(pod["containers"][0])
    directory, _, filename = path.rpartition("/")
    assert directory in mounts, f"{path} is not under a mount"
    return volumes_by_name(pod)[mounts[directory]["name"]], filename


def test_eks_irsa_annotation_lands_on_the_builder_service_account(tmp_path: Path) -> None:
    objects = render(example("eks-ecr.yaml"))
    account = _builder_service_account(objects)
    assert account["metadata"]["name"] == "management-agent"
    assert account["metadata"]["annotations"][IRSA] == \
        "arn:aws:iam::123456789012:role/management-agent-ecr"
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.images.builder == "direct"
    assert settings.images.credentials.provider == "ecr"
    assert settings.images.credentials.ecr_create_repositories is True
    assert settings.images.generated_image_repository == \
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models"


def test_eks_kaniko_variant_uses_its_own_service_account_and_ecr_login_config(
    tmp_path: Path,
) -> None:
    objects = render(example("eks-ecr.yaml"), [
        "imageBuilder.builder=kaniko", "imageBuilder.configMap=kaniko-ecr-config",
        "imageBuilder.serviceAccount.name=management-agent-image-builder",
    ])
    builder = _builder_service_account(objects)
    assert builder["metadata"]["name"] == "management-agent-image-builder"
    assert builder["metadata"]["annotations"][IRSA].endswith(":role/management-agent-ecr")
    assert builder["automountServiceAccountToken"] is False
    agent = _service_account(objects, "management-agent")
    assert IRSA not in (agent["metadata"].get("annotations") or {})
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.images.kaniko.config_map == "kaniko-ecr-config"
    assert settings.images.kaniko.secret_name is None
    assert settings.images.kaniko.service_account == "management-agent-image-builder"
    assert settings.images.kaniko.namespace == "mlops"


def test_aks_docker_config_secret_is_mounted_where_the_builder_reads_it(
    tmp_path: Path,
) -> None:
    objects = render(example("aks-acr.yaml"))
    settings = load_rendered_settings(objects, tmp_path)
    config_file = settings.images.credentials.docker_config_file
    assert config_file is not None
    volume, filename = _mounted_file(objects, str(config_file))
    assert volume["secret"]["secretName"] == "acr-push"
    assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": filename}]
    assert filename == "config.json"
    assert settings.images.credentials.provider == "dockerconfig"


def test_aks_kaniko_variant_hands_the_secret_to_kaniko(tmp_path: Path) -> None:
    objects = render(example("aks-acr.yaml"), ["imageBuilder.builder=kaniko"])
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.images.kaniko.secret_name == "acr-push"
    assert settings.images.kaniko.config_map is None
    from agent.images.kaniko import render_build_job

    job = render_build_job(
        destination="myregistry.azurecr.io/models:m-1", base_image="docker.io/library/python:3",
        model_uri="s3://models/iris", model_path="/mnt/models", images=settings.images,
        namespace="mlops", labels={},
    )
    pod = job["spec"]["template"]["spec"]
    kaniko = next(c for c in pod["containers"] if c["name"] == "kaniko")
    mount = mounts_by_path(kaniko)["/kaniko/.docker/config.json"]
    volume = volumes_by_name(pod)[mount["name"]]
    assert volume["secret"]["secretName"] == "acr-push"
    assert pod["serviceAccountName"] == agent_config(objects)["images"]["kaniko"]["service_account"]


def test_gke_workload_identity_annotation_lands_on_the_builder_service_account(
    tmp_path: Path,
) -> None:
    objects = render(example("gke-artifact-registry.yaml"))
    account = _builder_service_account(objects)
    assert account["metadata"]["annotations"][WORKLOAD_IDENTITY] == \
        "management-agent@my-project.iam.gserviceaccount.com"
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.images.credentials.provider == "gcp"
    assert settings.plugin.kubernetes.ingress_mode == "prefix"


@pytest.mark.parametrize("repository", ["gcr.io/my-project/models",
                                        "europe-west1-docker.pkg.dev/my-project/models/servers"])
def test_gke_registry_hosts_are_accepted(repository: str, tmp_path: Path) -> None:
    objects = render(example("gke-artifact-registry.yaml"),
                     [f"imageBuilder.generatedImageRepository={repository}"])
    assert load_rendered_settings(objects, tmp_path).images.generated_image_repository == \
        repository


def test_openshift_uses_routes_and_no_privileged_pod(tmp_path: Path) -> None:
    objects = render(example("openshift.yaml"))
    settings = load_rendered_settings(objects, tmp_path)
    assert settings.plugin.kubernetes.ingress_mode == "openshift-route"
    assert settings.plugin.kubernetes.security.run_as_user is None
    role = find(objects, "Role")
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "routes" in resources and "routes/custom-host" in resources
    for obj in find_all(objects, "Deployment") + find_all(objects, "Pod"):
        spec = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]
        assert "runAsUser" not in spec.get("securityContext", {})  # restricted-v2 assigns it
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc.get("privileged") is not True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "runAsUser" not in sc
    ca = settings.images.ca_bundle
    assert ca is not None
    volume, filename = _mounted_file(objects, str(ca))
    assert volume["configMap"] == {"name": "service-ca",
                                   "items": [{"key": "service-ca.crt", "path": filename}]}


def test_generic_registry_pull_secret_reaches_prediction_servers(tmp_path: Path) -> None:
    settings = load_rendered_settings(render(example("generic-registry.yaml")), tmp_path)
    assert settings.plugin.kubernetes.image_pull_secrets == ["registry-push"]
    assert settings.images.generated_image_repository == "docker.io/myorg/models"


@pytest.mark.parametrize("variant", ["insecure", "private-ca"])
def test_generic_registry_variants(variant: str, tmp_path: Path) -> None:
    sets = {
        "insecure": ["imageBuilder.generatedImageRepository=registry.registry.svc:5000/models",
                     "imageBuilder.registryAuth=anonymous", "imageBuilder.secretName=",
                     "imageBuilder.insecureRegistries={registry.registry.svc:5000}"],
        "private-ca": ["imageBuilder.generatedImageRepository=harbor.corp.example/ml/models",
                       "imageBuilder.registryCA.configMap=registry-ca",
                       "imageBuilder.builder=kaniko"],
    }[variant]
    objects = render(example("generic-registry.yaml"), sets)
    settings = load_rendered_settings(objects, tmp_path)
    if variant == "insecure":
        assert settings.images.insecure_registries == ["registry.registry.svc:5000"]
        assert settings.images.credentials.docker_config_file is None
    else:
        assert settings.images.ca_bundle is not None
        assert settings.images.kaniko.registry_certificates == {"harbor.corp.example": "ca.crt"}
        assert settings.images.kaniko.registry_certificates_config_map == "registry-ca"


def test_local_points_at_the_harness_registry(tmp_path: Path) -> None:
    settings = load_rendered_settings(render(example("local.yaml")), tmp_path)
    assert settings.images.insecure_registries == ["127.0.0.1:5000"]
    assert settings.plugin.kubernetes.default_server_profile == "local-python"
    profile = settings.plugin.kubernetes.server_profiles["local-python"]
    assert profile.run_as_non_root is False
    assert settings.artifacts.default_credentials_secret == "model-store"


def test_one_ca_bundle_value_reaches_every_client_and_the_pods(tmp_path: Path) -> None:
    """caBundle: mounted once, tls.ca_bundle for every client of the agent, and the
    ConfigMap named for the storage initializers and Kaniko Jobs the agent renders."""
    objects = render(example("generic-registry.yaml"), [
        "caBundle.configMap=corp-ca", "caBundle.key=root.pem", "imageBuilder.builder=kaniko",
        "imageBuilder.credentialHosts={mirror.corp.example}"])
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    mount = mounts_by_path(pod["containers"][0])["/etc/management-agent/ca/all"]
    volume = volumes_by_name(pod)[mount["name"]]
    assert volume["configMap"]["name"] == "corp-ca"
    assert volume["configMap"]["items"] == [{"key": "root.pem", "path": "ca.crt"}]
    settings = load_rendered_settings(objects, tmp_path)
    ca = Path("/etc/management-agent/ca/all/ca.crt")
    assert settings.tls.ca_bundle == ca
    assert (settings.control_plane.ca_bundle, settings.control_plane.mlflow.ca_bundle,
            settings.images.ca_bundle, settings.artifacts.ca_bundle) == (ca, ca, ca, ca)
    assert (settings.tls.ca_config_map, settings.tls.ca_key) == ("corp-ca", "root.pem")
    assert settings.images.credentials.hosts == ["mirror.corp.example"]
    assert "mutually exclusive" in render_error(
        example("generic-registry.yaml"), ["caBundle.configMap=a", "caBundle.secret=b"])

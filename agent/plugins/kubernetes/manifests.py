"""Pure rendering: a deployment spec becomes the Kubernetes objects that serve it.

No I/O here: the Kubernetes plugin applies what `render` returns, the
filesystem plugin writes it to files. A spec that cannot be served fails in
`validation.validate_spec` with an `InvalidActionError` before anything
touches a cluster.

Objects: the deployment's Secret (storage-initializer mode: the model URI,
see `storage.py`), Deployment, Service, the exposure (Ingress / Route / HTTPRoute, see
`ingress.py`) and, where configured, HorizontalPodAutoscaler, PodDisruptionBudget
and NetworkPolicy. `storage.model_delivery` adds what the delivery mode needs (fetch-model
init container: `agent.images.fetcher`; image volume: `model_volume.py`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agent.images.delivery import DeliveryMode, delivery_mode
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.ingress import health_url, prediction_url, render_exposure
from agent.plugins.kubernetes.modelsecret import text_hash
from agent.plugins.kubernetes.netpol import network_policy
from agent.plugins.kubernetes.options import DeploymentOptions, deployment_options
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile
from agent.plugins.kubernetes.storage import Delivery, model_delivery, uri_secret
from agent.plugins.kubernetes.validation import resources, validate_spec

__all__ = ["health_url", "prediction_url", "render", "validate_spec"]

SERVER_CONTAINER = "server"
SPOOL_VOLUME = "spool"


def _env_list(env: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": str(value)} for key, value in env.items()]


def _probe(path: str, failure_threshold: int, settings: KubernetesSettings) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": settings.probes.period_seconds,
        "timeoutSeconds": settings.probes.timeout_seconds,
        "failureThreshold": failure_threshold,
    }


def _security(
    spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile
) -> tuple[dict[str, Any], dict[str, Any]]:
    sec = settings.security
    non_root = deployment_options(spec).run_as_non_root
    if non_root is None:
        non_root = profile.run_as_non_root
    if non_root is None:
        non_root = sec.run_as_non_root
    pod: dict[str, Any] = {"runAsNonRoot": bool(non_root)}
    run_as_user = sec.run_as_user if sec.run_as_user is not None else profile.run_as_user
    for key, value in (("runAsUser", run_as_user), ("runAsGroup", sec.run_as_group),
                       ("fsGroup", sec.fs_group)):
        if value is not None:
            pod[key] = value
    if sec.seccomp_runtime_default:
        pod["seccompProfile"] = {"type": "RuntimeDefault"}
    container = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": sec.read_only_root_filesystem,
    }
    return pod, container


def _metadata(name: str, settings: KubernetesSettings, labels: dict[str, str],
              annotations: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": settings.namespace, "labels": dict(labels),
            "annotations": dict(annotations)}


def render(
    spec: DeploymentSpec,
    settings: KubernetesSettings,
    image: str,
    environment_id: str,
    *,
    restarted_at: str | None = None,
    fetcher_env: dict[str, str] | None = None,
    mode: DeliveryMode | None = None,
    model_volume: str | None = None,
) -> list[dict[str, Any]]:
    """Every object that serves `spec` with `image`; the Deployment first, its Secret last.

    `mode`: the delivery mode `agent.images.resolve_image` chose (None: from
    `settings.model_delivery`, `auto` counting as image). `fetcher_env`
    configures the storage initializer; `model_volume` is image-volume mode's image.
    """
    if mode is None:
        mode = delivery_mode(spec.model, settings.model_delivery)
    profile = validate_spec(spec, settings, mode, fetcher_env)
    name = names.object_name(spec.id, settings.name_prefix)
    labels = {**settings.extra_labels,
              **names.common_labels(spec.id, spec.model.id, environment_id)}
    annotations = {
        names.ANNOTATION_DEPLOYMENT_ID: spec.id,
        names.ANNOTATION_MODEL_ID: spec.model.id,
        names.ANNOTATION_ENVIRONMENT_ID: environment_id,
        names.ANNOTATION_PREDICTION_URL: prediction_url(spec, settings),
    }
    delivery = model_delivery(spec, settings, profile, mode, fetcher_env or {}, name,
                              model_volume)
    objects = [
        _deployment(spec, settings, profile, image, name, labels, annotations, restarted_at,
                    delivery),
        _service(settings, profile, name, labels, annotations, spec.id),
        *render_exposure(spec, settings, name, labels, annotations),
    ]
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        objects.append(_hpa(spec, settings, name, labels, annotations))
    if settings.pdb.enabled and _min_replicas(spec, settings) > 1:
        objects.append(_pdb(spec, settings, name, labels, annotations))
    if settings.network_policy.enabled:
        # first: the pods (their storage initializer included) must not start unrestricted
        objects.insert(0, network_policy(spec, settings, profile,
                                         _metadata(name, settings, labels, annotations), mode,
                                         fetcher_env or {}))
    # the Secret last; the Kubernetes plugin applies it first (kustomize and Argo CD order
    # Secrets before Deployments by themselves)
    return [*objects, *uri_secret(spec, settings, delivery, name, labels)]


def _min_replicas(spec: DeploymentSpec, settings: KubernetesSettings) -> int:
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        return spec.autoscaling.min_replicas
    return spec.replicas


def _server_container(spec: DeploymentSpec, settings: KubernetesSettings,
                      profile: ServerProfile, image: str,
                      security: dict[str, Any]) -> dict[str, Any]:
    """The prediction server (env and volume mounts are added by `_pod_spec`)."""
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": profile.port, "protocol": "TCP"}],
        "securityContext": dict(security),
    }
    if profile.metrics_port and profile.metrics_port != profile.port:
        server["ports"].append(
            {"name": "metrics", "containerPort": profile.metrics_port, "protocol": "TCP"})
    if profile.command:
        server["command"] = list(profile.command)
    if profile.args:
        server["args"] = list(profile.args)
    wanted = resources(spec, settings)
    if wanted:
        server["resources"] = wanted
    if settings.probes.enabled:
        p = settings.probes
        server["startupProbe"] = _probe(profile.health_path, p.startup_failure_threshold, settings)
        server["readinessProbe"] = _probe(
            profile.health_path, p.readiness_failure_threshold, settings)
        server["livenessProbe"] = _probe(
            profile.health_path, p.liveness_failure_threshold, settings)
    if settings.drain_seconds:
        # endpoints removal and SIGTERM race: the ingress may route here for a moment more
        server["lifecycle"] = {"preStop": {"sleep": {"seconds": settings.drain_seconds}}}
    return server


def _monitoring_sidecar(spec: DeploymentSpec, settings: KubernetesSettings,
                        security: dict[str, Any]) -> dict[str, Any]:
    spool = settings.monitoring.spool_dir
    sidecar: dict[str, Any] = {
        "name": "monitoring",
        "image": settings.monitoring.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env_list({
            **settings.monitoring.env,
            "MLOPS_DEPLOYMENT_ID": spec.id,
            "MLOPS_MODEL_ID": spec.model.id,
            "MLOPS_SPOOL_DIR": spool,
        }),
        "volumeMounts": [{"name": SPOOL_VOLUME, "mountPath": spool}],
        "securityContext": dict(security),
    }
    if settings.monitoring.resources:
        sidecar["resources"] = {k: dict(v) for k, v in settings.monitoring.resources.items()}
    return sidecar


def _pod_spec(spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile,
              image: str, options: DeploymentOptions, delivery: Delivery) -> dict[str, Any]:
    pod_security, container_security = _security(spec, settings, profile)
    init_containers, volumes, server_mounts = (list(part) for part in delivery)
    for init in init_containers:  # the agent's own fetch step writes only its volumes
        init["securityContext"] = {**container_security, "readOnlyRootFilesystem": True}
    env = {
        **profile.env,
        "MODEL_PATH": profile.model_path,
        "MLOPS_DEPLOYMENT_ID": spec.id,
        "MLOPS_MODEL_ID": spec.model.id,
        **spec.env,
    }
    server = _server_container(spec, settings, profile, image, container_security)
    containers = [server]
    if settings.security.read_only_root_filesystem:
        volumes.append({"name": "tmp", "emptyDir": {}})
        server_mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if settings.monitoring.enabled:
        env["MLOPS_SPOOL_DIR"] = settings.monitoring.spool_dir
        volumes.append({"name": SPOOL_VOLUME, "emptyDir": {}})
        server_mounts.append({"name": SPOOL_VOLUME, "mountPath": settings.monitoring.spool_dir})
        containers.append(_monitoring_sidecar(spec, settings, container_security))
    server["env"] = _env_list(env)
    if server_mounts:
        server["volumeMounts"] = server_mounts

    pod_spec: dict[str, Any] = {
        "containers": containers,
        "securityContext": pod_security,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 30,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if volumes:
        pod_spec["volumes"] = volumes
    service_account = options.service_account_name or settings.service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = str(service_account)
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    node_selector = {**settings.node_selector, **options.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [*settings.tolerations, *options.tolerations]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if settings.affinity:
        pod_spec["affinity"] = settings.affinity
    return pod_spec


def _deployment(
    spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile, image: str,
    name: str, labels: dict[str, str], annotations: dict[str, str], restarted_at: str | None,
    delivery: Delivery,
) -> dict[str, Any]:
    options = deployment_options(spec)
    pod_annotations = dict(settings.pod_annotations)
    if settings.prometheus_scrape:
        pod_annotations.update({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(profile.metrics_port or profile.port),
            "prometheus.io/path": profile.metrics_path,
        })
    if restarted_at:
        pod_annotations[names.ANNOTATION_RESTARTED_AT] = restarted_at
    template: dict[str, Any] = {
        "metadata": {"labels": dict(labels), "annotations": pod_annotations},
        "spec": _pod_spec(spec, settings, profile, image, options, delivery),
    }
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
    template["metadata"]["labels"][names.LABEL_TEMPLATE_HASH] = digest

    deployment_annotations = {
        **annotations,
        names.ANNOTATION_IMAGE: image,
        # a hash only: the spec (env values, URIs) is in the deployment's Secret
        names.ANNOTATION_SPEC: text_hash(spec.model_dump_json(exclude_defaults=True)),
    }
    body: dict[str, Any] = {
        "selector": {"matchLabels": names.selector_labels(spec.id)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {
                "maxSurge": settings.rolling_update.max_surge,
                "maxUnavailable": settings.rolling_update.max_unavailable,
            },
        },
        "progressDeadlineSeconds": settings.progress_deadline_seconds,
        "revisionHistoryLimit": settings.revision_history_limit,
        "template": template,
    }
    if spec.autoscaling is None or not settings.autoscaling.enabled:
        body = {"replicas": spec.replicas, **body}  # with an HPA, the HPA owns replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, settings, labels, deployment_annotations),
        "spec": body,
    }


def _service(settings: KubernetesSettings, profile: ServerProfile, name: str,
             labels: dict[str, str], annotations: dict[str, str],
             deployment_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, settings, labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(deployment_id),
            "ports": [{"name": "http", "port": settings.service_port,
                       "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _hpa(spec: DeploymentSpec, settings: KubernetesSettings, name: str,
         labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    assert spec.autoscaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(name, settings, labels, annotations),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {
                    "type": "Utilization",
                    "averageUtilization": spec.autoscaling.target_cpu_utilization,
                }},
            }],
        },
    }


def _pdb(spec: DeploymentSpec, settings: KubernetesSettings, name: str,
         labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, settings, labels, annotations),
        "spec": {
            "maxUnavailable": settings.pdb.max_unavailable,
            "selector": {"matchLabels": names.selector_labels(spec.id)},
        },
    }

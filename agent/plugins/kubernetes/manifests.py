"""Pure rendering: a deployment spec becomes the Kubernetes objects that serve it.

No I/O here: the Kubernetes plugin applies what `render` returns, the
filesystem plugin writes it to files. A spec that cannot be served fails in
`validate_spec` with an `InvalidActionError` before anything touches a cluster.

Objects: Deployment, Service, the exposure (Ingress / Route / HTTPRoute, see
`ingress.py`) and, where configured, HorizontalPodAutoscaler, PodDisruptionBudget
and NetworkPolicy. Model delivery is either a model image (built by
`agent.images`) or *storage-initializer* mode: the unchanged base server image
plus an init container running the agent's own image
(`management-agent fetch-model URI MODEL_PATH`) into a shared emptyDir.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from agent.artifacts.settings import ArtifactSettings
from agent.errors import InvalidActionError
from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.ingress import health_url, prediction_url, render_exposure
from agent.plugins.kubernetes.profiles import resolve_profile
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

__all__ = [
    "health_url",
    "model_image_needed",
    "prediction_url",
    "render",
    "resolve_delivery",
    "uses_storage_initializer",
    "validate_spec",
]

# Kubernetes resource.Quantity grammar (non-negative; signs are never meaningful here).
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_RESOURCE_NAME = re.compile(
    r"^(cpu|memory|ephemeral-storage|hugepages-[A-Za-z0-9.]+|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

IMAGE_SCHEMES = ("s3", "gs", "http", "https", "oci", "file", "pvc", "models")
INITIALIZER_SCHEMES = ("s3", "gs", "http", "https", "oci", "pvc", "models")

SERVER_CONTAINER = "server"
MODEL_VOLUME = "model"
CREDENTIALS_VOLUME = "model-credentials"
SPOOL_VOLUME = "spool"


def _fail(spec: DeploymentSpec, message: str) -> InvalidActionError:
    return InvalidActionError(f"deployment {spec.id}: {message}")


def is_quantity(value: str) -> bool:
    """True when `value` follows the Kubernetes quantity grammar (e.g. 500m, 1.5Gi, 2)."""
    return bool(_QUANTITY.match(value))


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].lower()


def uses_storage_initializer(spec: DeploymentSpec, settings: KubernetesSettings) -> bool:
    """True when the model is fetched by an init container instead of baked into an image.

    `settings.model_delivery` must already be resolved (`auto` counts as image mode here;
    the plugin resolves `auto` from `images.builder`).
    """
    return (
        settings.model_delivery == "storage-initializer"
        and spec.model.image is None
        and spec.model.uri is not None
    )


def model_image_needed(spec: DeploymentSpec, settings: KubernetesSettings) -> bool:
    """True when a model image has to be built for this deployment."""
    return spec.model.image is None and not uses_storage_initializer(spec, settings)


def _resources(spec: DeploymentSpec, settings: KubernetesSettings) -> dict[str, dict[str, str]]:
    if spec.resources is not None and (spec.resources.requests or spec.resources.limits):
        chosen = {"requests": dict(spec.resources.requests), "limits": dict(spec.resources.limits)}
    else:
        chosen = {key: dict(value) for key, value in settings.default_resources.items()}
    return {key: value for key, value in chosen.items() if value}


def validate_spec(spec: DeploymentSpec, settings: KubernetesSettings) -> ServerProfile:
    """Reject what cannot be served, before any cluster call; return the effective profile."""
    if not names.is_dns_label(spec.id):
        raise _fail(spec, "the deployment id must be a DNS-1123 label of at most 63 characters")
    if spec.replicas < 0:
        raise _fail(spec, f"replicas must be >= 0, got {spec.replicas}")
    for section, values in _resources(spec, settings).items():
        if section not in ("requests", "limits"):
            raise _fail(spec, f"unknown resources section {section!r}")
        for resource, quantity in values.items():
            if not _RESOURCE_NAME.match(resource):
                raise _fail(spec, f"resources.{section}: invalid resource name {resource!r}")
            if not is_quantity(str(quantity)):
                raise _fail(
                    spec, f"resources.{section}.{resource}: {quantity!r} is not a Kubernetes "
                    "quantity (examples: 500m, 2, 1.5Gi, 512Mi)",
                )
    for key in spec.env:
        if not _ENV_NAME.match(key):
            raise _fail(spec, f"env: invalid variable name {key!r}")
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        if spec.autoscaling.min_replicas > spec.autoscaling.max_replicas:
            raise _fail(spec, "autoscaling.min_replicas must not exceed max_replicas")
        if "cpu" not in _resources(spec, settings).get("requests", {}):
            raise _fail(
                spec, "autoscaling needs a CPU request: set resources.requests.cpu "
                "(the HPA scales on CPU utilisation relative to the request)",
            )
    timeout = spec.config.get("rollout_timeout_seconds")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise _fail(spec, "config.rollout_timeout_seconds must be a positive number")
    profile = resolve_profile(spec, settings)
    model = spec.model
    if model.image is None and model.uri is None:
        raise _fail(spec, "the model needs a uri (artifact) or an image (ready-built server)")
    if model.image is None and model.uri is not None:
        scheme = _scheme(model.uri)
        storage_init = uses_storage_initializer(spec, settings)
        allowed = INITIALIZER_SCHEMES if storage_init else IMAGE_SCHEMES
        if scheme not in allowed:
            how = "by the storage initializer" if storage_init else ""
            hint = (
                "; file:// paths live on the agent's disk: use pvc:// or build an image"
                if scheme == "file" else ""
            )
            raise _fail(
                spec, f"model uri scheme {scheme}:// cannot be served {how}".rstrip()
                + f" (supported: {', '.join(s + '://' for s in allowed)}){hint}",
            )
        if profile.image is None:
            raise _fail(
                spec, "the server profile has no base image: set model.image, "
                "config.base_image, or choose a profile with an image",
            )
        if storage_init and scheme != "pvc" and not settings.agent_image:
            raise _fail(
                spec, "storage-initializer mode needs plugin.kubernetes.agent_image (the "
                "agent's own image runs `management-agent fetch-model` in an init container)",
            )
    if settings.monitoring.enabled and not settings.monitoring.image:
        raise _fail(spec, "plugin.kubernetes.monitoring.enabled needs monitoring.image")
    return profile


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
    non_root = spec.config.get("run_as_non_root")
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
) -> list[dict[str, Any]]:
    """Every object that serves `spec` with `image` (the server image), in apply order.

    `fetcher_env` configures the storage initializer's `fetch-model` (see `fetcher_env()`).
    """
    profile = validate_spec(spec, settings)
    name = names.object_name(spec.id, settings.name_prefix)
    labels = {**settings.extra_labels,
              **names.common_labels(spec.id, spec.model.id, environment_id)}
    annotations = {
        names.ANNOTATION_DEPLOYMENT_ID: spec.id,
        names.ANNOTATION_MODEL_ID: spec.model.id,
        names.ANNOTATION_ENVIRONMENT_ID: environment_id,
        names.ANNOTATION_PREDICTION_URL: prediction_url(spec, settings),
    }
    objects = [
        _deployment(spec, settings, profile, image, name, labels, annotations, restarted_at,
                    fetcher_env or {}),
        _service(settings, profile, name, labels, annotations, spec.id),
        *render_exposure(spec, settings, name, labels, annotations),
    ]
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        objects.append(_hpa(spec, settings, name, labels, annotations))
    if settings.pdb.enabled and _min_replicas(spec, settings) > 1:
        objects.append(_pdb(spec, settings, name, labels, annotations))
    if settings.network_policy.enabled:
        objects.append(_network_policy(spec, settings, profile, name, labels, annotations))
    return objects


def fetcher_env(artifacts: ArtifactSettings) -> dict[str, str]:
    """The agent's artifact settings for an in-cluster `fetch-model` (storage initializer),
    as the environment its configuration reads; only what differs from the defaults."""
    wanted = ("s3_endpoint_url", "s3_region", "s3_addressing_style", "gcs_endpoint_url",
              "mlflow_tracking_uri", "max_archive_bytes", "max_archive_files")
    defaults = ArtifactSettings()
    env = {}
    for key in wanted:
        value = getattr(artifacts, key, None)
        if value is not None and value != getattr(defaults, key, None):
            env[f"MGMT_AGENT_ARTIFACTS__{key.upper()}"] = str(value)
    return env


def _min_replicas(spec: DeploymentSpec, settings: KubernetesSettings) -> int:
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        return spec.autoscaling.min_replicas
    return spec.replicas


def _model_delivery(
    spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile,
    container_security: dict[str, Any], fetcher_env: dict[str, str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(init containers, volumes, server volume mounts) of storage-initializer mode."""
    if not uses_storage_initializer(spec, settings):
        return [], [], []
    uri = spec.model.uri or ""
    if _scheme(uri) == "pvc":
        claim, _, sub_path = uri.split("://", 1)[1].partition("/")
        mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": profile.model_path,
                                 "readOnly": True}
        if sub_path:
            mount["subPath"] = sub_path
        volume = {"name": MODEL_VOLUME,
                  "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return [], [volume], [mount]
    volumes: list[dict[str, Any]] = [{"name": MODEL_VOLUME, "emptyDir": {}}]
    init_mounts: list[dict[str, Any]] = [{"name": MODEL_VOLUME, "mountPath": profile.model_path}]
    args = ["fetch-model", uri, profile.model_path]
    if spec.model.credentials_secret:
        volumes.append({"name": CREDENTIALS_VOLUME,
                        "secret": {"secretName": spec.model.credentials_secret}})
        init_mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": settings.credentials_dir,
                            "readOnly": True})
        args += ["--credentials-dir", settings.credentials_dir]
    if spec.model.digest:
        args += ["--digest", spec.model.digest]
    init: dict[str, Any] = {
        "name": "storage-initializer",
        "image": settings.agent_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["management-agent"],
        "args": args,
        "volumeMounts": init_mounts,
        "securityContext": dict(container_security),
    }
    if fetcher_env:
        init["env"] = [{"name": k, "value": v} for k, v in sorted(fetcher_env.items())]
    server_mounts = [{"name": MODEL_VOLUME, "mountPath": profile.model_path, "readOnly": True}]
    return [init], volumes, server_mounts


def _deployment(
    spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile, image: str,
    name: str, labels: dict[str, str], annotations: dict[str, str], restarted_at: str | None,
    fetcher_env: dict[str, str],
) -> dict[str, Any]:
    pod_security, container_security = _security(spec, settings, profile)
    init_containers, volumes, server_mounts = _model_delivery(
        spec, settings, profile, container_security, fetcher_env)
    env = {
        **profile.env,
        "MODEL_PATH": profile.model_path,
        "MLOPS_DEPLOYMENT_ID": spec.id,
        "MLOPS_MODEL_ID": spec.model.id,
        **spec.env,
    }
    containers: list[dict[str, Any]] = []
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": profile.port, "protocol": "TCP"}],
        "securityContext": dict(container_security),
    }
    if profile.metrics_port and profile.metrics_port != profile.port:
        server["ports"].append(
            {"name": "metrics", "containerPort": profile.metrics_port, "protocol": "TCP"})
    if profile.command:
        server["command"] = list(profile.command)
    if profile.args:
        server["args"] = list(profile.args)
    resources = _resources(spec, settings)
    if resources:
        server["resources"] = resources
    if settings.probes.enabled:
        p = settings.probes
        server["startupProbe"] = _probe(profile.health_path, p.startup_failure_threshold, settings)
        server["readinessProbe"] = _probe(
            profile.health_path, p.readiness_failure_threshold, settings)
        server["livenessProbe"] = _probe(
            profile.health_path, p.liveness_failure_threshold, settings)
    if settings.security.read_only_root_filesystem:
        volumes.append({"name": "tmp", "emptyDir": {}})
        server_mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if settings.monitoring.enabled:
        spool = settings.monitoring.spool_dir
        env["MLOPS_SPOOL_DIR"] = spool
        volumes.append({"name": SPOOL_VOLUME, "emptyDir": {}})
        server_mounts.append({"name": SPOOL_VOLUME, "mountPath": spool})
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
            "securityContext": dict(container_security),
        }
        if settings.monitoring.resources:
            sidecar["resources"] = {k: dict(v) for k, v in settings.monitoring.resources.items()}
        containers.append(sidecar)
    server["env"] = _env_list(env)
    if server_mounts:
        server["volumeMounts"] = server_mounts
    containers.insert(0, server)

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
    service_account = spec.config.get("service_account_name") or settings.service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = str(service_account)
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in settings.image_pull_secrets]
    node_selector = {**settings.node_selector, **(spec.config.get("node_selector") or {})}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [*settings.tolerations, *(spec.config.get("tolerations") or [])]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if settings.affinity:
        pod_spec["affinity"] = settings.affinity

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
        "spec": pod_spec,
    }
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
    template["metadata"]["labels"][names.LABEL_TEMPLATE_HASH] = digest

    deployment_annotations = {
        **annotations,
        names.ANNOTATION_IMAGE: image,
        names.ANNOTATION_SPEC: spec.model_dump_json(exclude_defaults=True),
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


def _network_policy(spec: DeploymentSpec, settings: KubernetesSettings, profile: ServerProfile,
                    name: str, labels: dict[str, str],
                    annotations: dict[str, str]) -> dict[str, Any]:
    np = settings.network_policy
    namespaces = [np.ingress_controller_namespace, *np.allow_from_namespaces]
    peers: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
        for ns in namespaces
    ]
    if np.agent_pod_labels:
        peers.append({"podSelector": {"matchLabels": dict(np.agent_pod_labels)}})
    ports = [{"protocol": "TCP", "port": profile.port}]
    if profile.metrics_port and profile.metrics_port != profile.port:
        ports.append({"protocol": "TCP", "port": profile.metrics_port})
    body: dict[str, Any] = {
        "podSelector": {"matchLabels": names.selector_labels(spec.id)},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": ports}],
    }
    if np.restrict_egress:
        body["policyTypes"].append("Egress")
        body["egress"] = [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            *np.extra_egress,
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(name, settings, labels, annotations),
        "spec": body,
    }


def resolve_delivery(settings: KubernetesSettings, builder: str) -> KubernetesSettings:
    """`settings` with `model_delivery: auto` resolved from the image builder.

    auto means storage-initializer when `images.builder` is `none` (nothing can
    build a model image), image mode otherwise.
    """
    if settings.model_delivery != "auto":
        return settings
    mode = "storage-initializer" if builder == "none" else "image"
    return settings.model_copy(update={"model_delivery": mode})

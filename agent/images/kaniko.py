"""The Kaniko builder: one batch/v1 Job per image, rendered purely, run through a KubeClient.

Build context without secrets in build arguments: an init container runs the
agent's own image (`management-agent fetch-model URI /workspace/model`) into
an emptyDir and writes the two-line Dockerfile next to it; the executor
builds `FROM base` + `COPY model MODEL_PATH` and pushes. Registry
credentials are mounted exactly as the settings say: an ECR `credsStore`
ConfigMap (+ IRSA service account), a dockerconfigjson Secret (ACR, generic,
OpenShift), or nothing for GCR/Artifact Registry with Workload Identity.

The Job's name is derived from a hash of the full destination (repository and
content-addressed tag), so a build that is already running (after an agent
restart, a re-delivered action) is adopted, not started twice, while the same
tag pushed to two repositories gets two Jobs. A Job that already failed (or
was made for another destination) is deleted and created again, so a retry
after fixing credentials does not wait for the old Job's TTL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from agent.errors import BuildError, RegistryError
from agent.images.naming import BUILDER_RECIPE, ImageRef, content_tag, parse_reference
from agent.images.settings import ImageSettings, RegistryCredentials

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.images import BuiltImage
    from agent.model import DeploymentSpec

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"
DOCKER_CONFIG_DIR = "/kaniko/.docker"
CERTS_DIR = "/kaniko/certs"
MODEL_CREDENTIALS_DIR = "/var/run/secrets/management-agent/model"
KANIKO_RECIPE = "kaniko-1"
DEFAULT_FETCHER_IMAGE = "ghcr.io/management-agent/management-agent:latest"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9_.-]+")
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")
_SECRETS = re.compile(r"(?i)(authorization|password|token|secret)([\"']?\s*[:=]\s*)\S+")


class KubeLike(Protocol):
    """What the runner needs of `agent.plugins.kubernetes.client.KubeClient`."""

    def create(self, obj: Mapping[str, Any], *, namespace: str | None = None,
               exist_ok: bool = False) -> dict[str, Any]: ...

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None: ...

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]: ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               *, propagation: str = "Background") -> bool: ...

    def pod_logs(self, name: str, namespace: str | None = None, *,
                 container: str | None = None, tail_lines: int | None = None) -> str: ...


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    return _LABEL_VALUE.sub("-", value)[:63].strip("-_.") or "none"


def job_name(destination: str) -> str:
    """The Job of one destination: `model-build-<tag>-<hash of repository:tag>`.

    A valid DNS-1123 label (<= 63 chars); the tag part is only for people reading
    `kubectl get jobs`, the hash of the full reference keeps repositories apart.
    """
    digest = hashlib.sha256(destination.encode()).hexdigest()[:16]
    tag = parse_reference(destination).tag or "latest"
    readable = _DNS_LABEL.sub("-", tag.lower())[:30].strip("-")
    return f"model-build-{readable}-{digest}" if readable else f"model-build-{digest}"


def dockerfile(base_image: str, model_path: str) -> str:
    return f"FROM {base_image}\nCOPY model {model_path}\nENV MODEL_PATH={model_path}\n"


def _registry_flags(images: ImageSettings, destination: ImageRef, base: ImageRef) -> list[str]:
    args: list[str] = []
    for host in images.insecure_registries:
        args.append(f"--insecure-registry={host}")
    if destination.registry in images.insecure_registries:
        args.append("--insecure")
    if base.registry in images.insecure_registries:
        args.append("--insecure-pull")
    for host in images.skip_tls_verify_registries:
        args.append(f"--skip-tls-verify-registry={host}")
    if destination.registry in images.skip_tls_verify_registries:
        args.append("--skip-tls-verify")
    if base.registry in images.skip_tls_verify_registries:
        args.append("--skip-tls-verify-pull")
    for host, key in sorted(images.kaniko.registry_certificates.items()):
        args.append(f"--registry-certificate={host}={CERTS_DIR}/{key}")
    return args


def render_build_job(*, destination: str, base_image: str, model_uri: str, model_path: str,
                     images: ImageSettings, namespace: str, labels: Mapping[str, str],
                     fetcher_image: str | None = None,
                     artifact_env: Mapping[str, str] | None = None,
                     model_digest: str | None = None,
                     model_credentials_secret: str | None = None) -> dict[str, Any]:
    """The batch/v1 Job that builds and pushes `destination` (pure; no I/O).

    `model_credentials_secret`: the deployment's `spec.model.credentials_secret`;
    without it, `images.kaniko.model_credentials_secret` is mounted (if set).
    """
    kaniko = images.kaniko
    dest = parse_reference(destination)
    base = parse_reference(base_image)
    name = job_name(destination)
    meta_labels = {
        "app.kubernetes.io/managed-by": "management-agent",
        "app.kubernetes.io/component": "image-builder",
        "io.management-agent/image-tag": label_value(dest.tag or "latest"),
        **{f"io.management-agent/{k}": label_value(v) for k, v in labels.items()
           if k in ("deployment-id", "model-id")},
    }
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    if kaniko.config_map:
        volumes.append({"name": "docker-config", "configMap": {"name": kaniko.config_map}})
        mounts.append({"name": "docker-config", "mountPath": DOCKER_CONFIG_DIR})
    elif kaniko.secret_name:
        volumes.append({"name": "docker-config", "secret": {
            "secretName": kaniko.secret_name,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
        }})
        mounts.append({"name": "docker-config", "mountPath": f"{DOCKER_CONFIG_DIR}/config.json",
                       "subPath": "config.json", "readOnly": True})
    if kaniko.registry_certificates_config_map:
        volumes.append({"name": "registry-certs",
                        "configMap": {"name": kaniko.registry_certificates_config_map}})
        mounts.append({"name": "registry-certs", "mountPath": CERTS_DIR, "readOnly": True})
    volumes.extend(kaniko.extra_volumes)
    mounts.extend(kaniko.extra_volume_mounts)

    args = [
        f"--dockerfile={WORKSPACE}/Dockerfile",
        f"--context=dir://{WORKSPACE}",
        f"--destination={destination}",
        "--digest-file=/dev/termination-log",
        "--snapshot-mode=redo",
        "--compressed-caching=false",
        "--cache=false",
        *(f"--label={k}={v}" for k, v in sorted(labels.items())),
        *_registry_flags(images, dest, base),
        *kaniko.extra_args,
    ]
    fetch_args = ["fetch-model", model_uri, f"{WORKSPACE}/model"]
    fetch_mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    credentials_secret = model_credentials_secret or kaniko.model_credentials_secret
    if credentials_secret:
        volumes.append({"name": "model-credentials",
                        "secret": {"secretName": credentials_secret}})
        fetch_mounts.append({"name": "model-credentials", "mountPath": MODEL_CREDENTIALS_DIR,
                             "readOnly": True})
        fetch_args += ["--credentials-dir", MODEL_CREDENTIALS_DIR]
    if model_digest:
        fetch_args += ["--digest", model_digest]
    fetch_env = [
        {"name": "DOCKERFILE", "value": dockerfile(base_image, model_path)},
        {"name": "MODEL_URI", "value": model_uri},
        *({"name": k, "value": v} for k, v in sorted((artifact_env or {}).items())),
    ]
    fetcher = {
        "name": "fetch-model",
        "image": fetcher_image or kaniko.fetcher_image or DEFAULT_FETCHER_IMAGE,
        # The Dockerfile comes from the environment, so nothing is interpolated into the shell.
        "command": ["/bin/sh", "-c",
                    f'printf "%s" "$DOCKERFILE" > {WORKSPACE}/Dockerfile && '
                    'exec management-agent "$@"', "fetch-model"],
        "args": fetch_args,
        "env": fetch_env,
        "volumeMounts": fetch_mounts,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                      "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    executor = {
        "name": "kaniko",
        "image": kaniko.image,
        "args": args,
        "volumeMounts": mounts,
        "resources": kaniko.resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "initContainers": [fetcher],
        "containers": [executor],
        "volumes": volumes,
    }
    if kaniko.service_account:
        pod_spec["serviceAccountName"] = kaniko.service_account
    if kaniko.node_selector:
        pod_spec["nodeSelector"] = dict(kaniko.node_selector)
    if kaniko.tolerations:
        pod_spec["tolerations"] = list(kaniko.tolerations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": meta_labels},
        "spec": {
            "backoffLimit": kaniko.backoff_limit,
            "activeDeadlineSeconds": kaniko.timeout_seconds,
            "ttlSecondsAfterFinished": kaniko.ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": meta_labels,
                    "annotations": {
                        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                        **kaniko.annotations,
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def ecr_config_map(name: str, namespace: str) -> dict[str, Any]:
    """The ConfigMap that makes Kaniko use the ECR credential helper (IRSA)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"config.json": '{"credsStore":"ecr-login"}'}}


def _scrub(text: str) -> str:
    return _SECRETS.sub(lambda m: f"{m.group(1)}{m.group(2)}**********", text)


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _job_pods(kube: KubeLike, job: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    """Pods of this Job: the `job-name` label, minus pods owned by an earlier Job of that name
    (a replaced Job's pods may linger while the garbage collector removes them)."""
    meta = job.get("metadata") or {}
    uid = meta.get("uid")
    pods = kube.list("v1", "Pod", namespace, label_selector=f"job-name={meta['name']}")
    if not uid:
        return pods
    return [pod for pod in pods
            if not (owners := (pod.get("metadata") or {}).get("ownerReferences"))
            or any(owner.get("uid") == uid for owner in owners)]


def _failure_message(kube: KubeLike, job: Mapping[str, Any], namespace: str, destination: str,
                     tail_lines: int) -> str:
    """Why the Job failed: the Job's reason, container reasons, and the executor log tail."""
    name = job["metadata"]["name"]
    failed = _condition(job, "Failed") or {}
    reasons = [str(failed.get("reason") or "failed")]
    tail, container = "", "kaniko"
    pods = _job_pods(kube, job, namespace)
    for pod in pods[-1:]:
        status = pod.get("status") or {}
        for kind, statuses in (("init", status.get("initContainerStatuses") or []),
                               ("main", status.get("containerStatuses") or [])):
            for item in statuses:
                state = (item.get("state") or {}).get("terminated") or {}
                if state and state.get("exitCode", 0) != 0:
                    reasons.append(f"{item.get('name')}: {state.get('reason', 'Error')} "
                                   f"(exit {state.get('exitCode')})")
                    if kind == "init":
                        container = str(item.get("name"))
        try:
            tail = kube.pod_logs(pod["metadata"]["name"], namespace, container=container,
                                 tail_lines=tail_lines)
        except Exception as exc:
            tail = f"(no log: {type(exc).__name__})"
    hint = ""
    lowered = tail.lower()
    if "oomkilled" in " ".join(reasons).lower():
        hint = " Raise images.kaniko.resources.limits.memory."
    elif "deadlineexceeded" in " ".join(reasons).lower():
        hint = " Raise images.kaniko.timeout_seconds."
    elif any(word in lowered for word in ("unauthorized", "401", "authentication required",
                                          "denied")):
        registry = parse_reference(destination).registry
        hint = (f" The builder could not authenticate to {registry}: check "
                "images.kaniko.secret_name / config_map / service_account.")
    return (f"image build job {namespace}/{name} for {destination} failed: "
            f"{'; '.join(reasons)}.{hint}\n--- {container} log (tail) ---\n{_scrub(tail)}")


def _destination(job: Mapping[str, Any]) -> str | None:
    """The `--destination` of a (rendered or live) build Job, None when it has none."""
    try:
        args = job["spec"]["template"]["spec"]["containers"][0].get("args") or []
    except (KeyError, IndexError, TypeError):
        return None
    return next((str(a).split("=", 1)[1] for a in args
                 if str(a).startswith("--destination=")), None)


def _replace_job(kube: KubeLike, job: dict[str, Any], why: str, report: Callable[..., None],
                 poll_interval: float, delete_timeout: float,
                 sleep: Callable[[float], None], clock: Callable[[], float]) -> dict[str, Any]:
    """Delete the existing Job of this name, wait (bounded) until it is gone, create `job`."""
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    log.info("replacing image build job %s/%s: %s", namespace, name, why)
    report(f"image build job {name} {why}: deleting it to build again", job=name)
    kube.delete("batch/v1", "Job", name, namespace, propagation="Background")
    deadline = clock() + delete_timeout
    while kube.get("batch/v1", "Job", name, namespace) is not None:
        if clock() > deadline:
            raise BuildError(f"image build job {namespace}/{name} ({why}) was deleted but is "
                             f"still there after {delete_timeout:.0f}s (finalizers?); "
                             "retry later or delete it by hand")
        sleep(min(poll_interval, 1.0))
    return kube.create(job, namespace=namespace, exist_ok=True)


def run_build_job(kube: KubeLike, job: dict[str, Any], report: Callable[..., None],
                  poll_interval: float = 3.0, tail_lines: int = 40,
                  sleep: Callable[[float], None] = time.sleep,
                  clock: Callable[[], float] = time.monotonic,
                  delete_timeout: float = 60.0) -> str:
    """Create (or adopt) the Job, wait for it; return the pushed digest ('' if unknown).

    A running or completed Job of the same name and destination is adopted; one
    that failed, or that pushes elsewhere, is deleted and created again.
    """
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    destination = _destination(job)
    if destination is None:
        raise BuildError(f"image build job {namespace}/{name} has no --destination")
    existing = kube.create(job, namespace=namespace, exist_ok=True)
    if _condition(existing, "Failed"):
        _replace_job(kube, job, "failed before", report, poll_interval, delete_timeout,
                     sleep, clock)
    elif _destination(existing) not in (None, destination):
        _replace_job(kube, job, f"was made for {_destination(existing)}", report,
                     poll_interval, delete_timeout, sleep, clock)
    report(f"image build job {name} started", job=name, image=destination)
    deadline = clock() + float(job["spec"].get("activeDeadlineSeconds") or 3600) + 120
    while True:
        live = kube.get("batch/v1", "Job", name, namespace)
        if live is None:
            raise BuildError(f"image build job {namespace}/{name} disappeared while running")
        if _condition(live, "Complete") or (live.get("status") or {}).get("succeeded"):
            return _pushed_digest(kube, live, namespace)
        if _condition(live, "Failed"):
            raise BuildError(_failure_message(kube, live, namespace, destination, tail_lines))
        if clock() > deadline:
            raise BuildError(f"image build job {namespace}/{name} did not finish in time "
                             "(DeadlineExceeded): raise images.kaniko.timeout_seconds")
        sleep(poll_interval)


def _pushed_digest(kube: KubeLike, job: Mapping[str, Any], namespace: str) -> str:
    for pod in _job_pods(kube, job, namespace):
        for item in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((item.get("state") or {}).get("terminated") or {}).get("message") or ""
            if item.get("name") == "kaniko" and message.strip().startswith("sha256:"):
                return message.strip()
    return ""


def _warn_unchecked(host: str, target: ImageRef, exc: RegistryError, consequence: str) -> None:
    """The agent cannot use the registry itself: say so, and build anyway (Kaniko pushes)."""
    log.warning("the agent cannot reach or authenticate to registry %s (%s): %s, and the "
                "Kaniko build will push %s/%s with the builder's identity "
                "(images.kaniko.secret_name / config_map / service_account)",
                host, exc, consequence, target.registry, target.repository)


def build_with_kaniko(spec: DeploymentSpec, base_image: str, model_path: str,
                      settings: Settings, report: Callable[..., None], *, target: ImageRef,
                      open_source: Callable[[], Any], kube: KubeLike | None) -> BuiltImage:
    """Content-address, check the registry, then build with a Kaniko Job if needed."""
    from agent.images import BuiltImage, image_labels
    from agent.images.auth import provider_for
    from agent.images.registry import Registry

    if kube is None:
        raise BuildError("images.builder is kaniko but no Kubernetes client was given (kube=)")
    if not spec.model.uri:
        raise BuildError(f"deployment {spec.id}: the model has no uri to build from")
    images = settings.images
    base = parse_reference(base_image)
    registry: Registry | None = None
    checking = target.registry
    try:
        registry = Registry(target.registry, images,
                            provider_for(images.credentials, target.registry))
        registry.ping()
        checking = base.registry
        source_registry = registry if base.registry == target.registry else Registry(
            base.registry, images, provider_for(images.base_credentials or
                                                RegistryCredentials(), base.registry))
        if source_registry is not registry:
            source_registry.ping()
        base_digest = source_registry.resolve_image(base.repository, base.reference).digest
    except RegistryError as exc:
        _warn_unchecked(checking, target, exc, "the tag is derived from the base reference")
        registry, base_digest = None, base.digest or str(base)
    with open_source() as source:
        model_digest = source.digest
    tag = content_tag(model_digest, base_digest,
                      f"{KANIKO_RECIPE}/{BUILDER_RECIPE}/{images.recipe_version}/{model_path}")
    ref = target.with_tag(tag)
    if registry is not None:
        try:
            existing = registry.manifest_digest(target.repository, tag)
            if existing:
                report(f"image reused: {ref}", image=str(ref), digest=existing)
                return BuiltImage(str(ref), existing, True)
            registry.provider.ensure_repository(registry.host, target.repository)
        except RegistryError as exc:
            _warn_unchecked(target.registry, target, exc, "no existing image is reused")
            registry = None
    namespace = images.kaniko.namespace or settings.plugin.kubernetes.namespace
    artifacts = settings.artifacts
    artifact_env = {f"MGMT_AGENT_ARTIFACTS__{key.upper()}": str(value)
                    for key, value in (("s3_endpoint_url", artifacts.s3_endpoint_url),
                                       ("s3_region", artifacts.s3_region),
                                       ("mlflow_tracking_uri", artifacts.mlflow_tracking_uri))
                    if value}
    labels = {**image_labels(spec), "io.management-agent.model-digest": model_digest}
    job = render_build_job(destination=str(ref), base_image=base_image, model_uri=spec.model.uri,
                           model_path=model_path, images=images, namespace=namespace,
                           labels=labels, artifact_env=artifact_env,
                           model_digest=spec.model.digest,
                           model_credentials_secret=spec.model.credentials_secret)
    digest = run_build_job(kube, job, report, images.kaniko.poll_interval_seconds,
                           images.kaniko.log_tail_lines)
    if registry is not None:
        try:
            digest = registry.manifest_digest(target.repository, tag) or digest
        except RegistryError as exc:
            log.warning("cannot read the digest of %s from %s after the build (%s); using the "
                        "digest the Kaniko Job reported", ref, target.registry, exc)
    report(f"image pushed: {ref}", image=str(ref), digest=digest)
    return BuiltImage(str(ref), digest, False)

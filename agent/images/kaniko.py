"""The Kaniko builder: one batch/v1 Job per image, rendered purely, run through a KubeClient.

Build context without secrets in build arguments: an init container runs the
agent's own image (`management-agent fetch-model --uri-from-env MODEL_URI
/workspace/model`) into an emptyDir and writes the two-line Dockerfile next to
it; the executor builds `FROM base` + `COPY model MODEL_PATH` and pushes. The
model URI (user info, signed queries) is in the build's own Secret
(`build_secret`, owned by the Job), never in the Job spec.

Pod security: the fetch step runs as non-root with no capabilities and a
read-only root filesystem; the pod has the RuntimeDefault seccomp profile and
no service-account token unless a builder identity needs one. The Kaniko
executor itself runs as root (it unpacks the base image's filesystem as
root): a namespace enforcing Pod Security `restricted` refuses it, which
`build_job` reports at once; use the direct builder there. Registry
credentials are mounted exactly as the settings say: an ECR `credsStore`
ConfigMap (+ IRSA service account), a dockerconfigjson Secret (ACR, generic,
OpenShift), or nothing for GCR/Artifact Registry with Workload Identity.

The Job's name is derived from a hash of the full destination (repository and
content-addressed tag), so a running build is adopted by `build_job.run_build_job`
rather than started twice, while the same tag pushed to two repositories gets two
Jobs. The content address and the registry check happen before, in `content.py`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.errors import BuildError, RegistryError
from agent.images.build_job import KubeLike, run_build_job
from agent.images.content import Destination
from agent.images.fetcher import CA_VOLUME, fetch_model_container
from agent.images.naming import BUILDER_RECIPE, ImageRef, parse_reference
from agent.images.settings import ImageSettings, KanikoSettings
from agent.plugins.kubernetes import modelsecret, names

if TYPE_CHECKING:
    from agent.model import DeploymentSpec

log = logging.getLogger(__name__)

WORKSPACE = "/workspace"
DOCKER_CONFIG_DIR = "/kaniko/.docker"
CERTS_DIR = "/kaniko/certs"
#: the tls CA: named by --registry-certificate for the target and base registries (Kaniko adds
#: it to the system pool), and a file in SSL_CERT_DIR (/kaniko/ssl/certs) for other hosts
KANIKO_EXTRA_CA = "/kaniko/ssl/certs/management-agent-ca.crt"
KANIKO_RECIPE = "kaniko-1"
DEFAULT_FETCHER_IMAGE = "ghcr.io/management-agent/management-agent:latest"
_DNS_LABEL = re.compile(r"[^a-z0-9-]+")


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
    for hosts, each, push, pull in (
        (images.insecure_registries, "--insecure-registry", "--insecure", "--insecure-pull"),
        (images.skip_tls_verify_registries, "--skip-tls-verify-registry", "--skip-tls-verify",
         "--skip-tls-verify-pull"),
    ):
        args.extend(f"{each}={host}" for host in hosts)
        if destination.registry in hosts:
            args.append(push)
        if base.registry in hosts:
            args.append(pull)
    for host, key in sorted(images.kaniko.registry_certificates.items()):
        args.append(f"--registry-certificate={host}={CERTS_DIR}/{key}")
    return args


def _executor_volumes(kaniko: KanikoSettings) -> tuple[list[dict[str, Any]],
                                                      list[dict[str, Any]]]:
    """(volumes, executor mounts): the build context, registry credentials and CAs."""
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
    return [*volumes, *kaniko.extra_volumes], [*mounts, *kaniko.extra_volume_mounts]


#: the fetch step: nothing of root, nothing written outside its emptyDirs
FETCHER_SECURITY = {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


def secret_name(job: str) -> str:
    """The Secret holding the model URI of the build Job `job`."""
    return job + modelsecret.SUFFIX


def build_secret(job: Mapping[str, Any], model_uri: str) -> dict[str, Any]:
    """The build's Secret (the model URI the fetch step reads); `run_build_job` applies it
    before the Job and makes the Job its owner, so the Job's TTL removes both."""
    meta = job["metadata"]
    return modelsecret.render_secret(secret_name(meta["name"]), meta["namespace"],
                                     meta.get("labels") or {},
                                     {modelsecret.uri_key(model_uri): model_uri})


def _fetcher(image: str, job: str, model_uri: str, credentials_secret: str | None,
             digest: str | None, artifact_env: Mapping[str, str] | None,
             dockerfile_text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container that fetches the model into the build context and writes the
    Dockerfile next to it (from the environment: nothing is interpolated into the shell)."""
    fetcher, volumes = fetch_model_container(
        name="fetch-model", image=image,
        uri_env=modelsecret.uri_env(secret_name(job), model_uri), dest=f"{WORKSPACE}/model",
        mounts=[{"name": "workspace", "mountPath": WORKSPACE},
                {"name": "fetch-tmp", "mountPath": "/tmp"}],
        credentials_secret=credentials_secret, digest=digest, env=artifact_env,
        security=FETCHER_SECURITY)
    fetcher["command"] = ["/bin/sh", "-c", f'printf "%s" "$DOCKERFILE" > {WORKSPACE}/Dockerfile'
                          ' && exec management-agent "$@"', "fetch-model"]
    fetcher["env"] = [{"name": "DOCKERFILE", "value": dockerfile_text},
                      {"name": "HOME", "value": "/tmp"}, *fetcher.get("env", [])]
    volumes = [{"name": "fetch-tmp", "emptyDir": {}}, *volumes]
    fetcher["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"},
                            "limits": {"memory": "1Gi"}}
    return fetcher, volumes


def _scheduling(kaniko: KanikoSettings) -> dict[str, Any]:
    """Service account (cloud identity), node selector and tolerations of the build pod."""
    fields: dict[str, Any] = {}
    if kaniko.service_account:
        fields["serviceAccountName"] = kaniko.service_account
    if kaniko.node_selector:
        fields["nodeSelector"] = dict(kaniko.node_selector)
    if kaniko.tolerations:
        fields["tolerations"] = list(kaniko.tolerations)
    return fields


def render_build_job(*, destination: str, base_image: str, model_uri: str, model_path: str,
                     images: ImageSettings, namespace: str, labels: Mapping[str, str],
                     fetcher_image: str | None = None,
                     artifact_env: Mapping[str, str] | None = None,
                     model_digest: str | None = None,
                     model_credentials_secret: str | None = None,
                     deployment_id: str | None = None,
                     model_id: str | None = None) -> dict[str, Any]:
    """The batch/v1 Job that builds and pushes `destination` (pure; no I/O).

    `labels`: the image's (OCI) labels. `model_credentials_secret`: the
    deployment's `spec.model.credentials_secret`; without it,
    `images.kaniko.model_credentials_secret` is mounted (if set).
    """
    kaniko = images.kaniko
    dest = parse_reference(destination)
    base = parse_reference(base_image)
    name = job_name(destination)
    meta_labels = {
        **names.owner_labels(deployment_id, model_id),
        names.LABEL_COMPONENT: "image-builder",
        names.LABEL_IMAGE_TAG: names.label_value(dest.tag or "latest"),
    }
    volumes, mounts = _executor_volumes(kaniko)

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
    fetcher, fetch_volumes = _fetcher(
        fetcher_image or kaniko.fetcher_image or DEFAULT_FETCHER_IMAGE, name, model_uri,
        model_credentials_secret or kaniko.model_credentials_secret, model_digest,
        artifact_env, dockerfile(base_image, model_path))
    volumes.extend(fetch_volumes)
    if getattr(artifact_env, "ca_volume", None):  # the tls CA, added to Kaniko's roots
        mounts.append({"name": CA_VOLUME, "mountPath": KANIKO_EXTRA_CA, "subPath": "ca.crt",
                       "readOnly": True})
        args += [f"--registry-certificate={host}={KANIKO_EXTRA_CA}"
                 for host in sorted({dest.registry, base.registry} - set(
                     kaniko.registry_certificates))]
    executor = {
        "name": "kaniko",
        "image": kaniko.image,
        "args": args,
        "volumeMounts": mounts,
        "resources": kaniko.resources,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Kaniko unpacks the base image as root (its documented requirement); it never
        # needs to gain more than that
        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        # a builder identity (IRSA, Workload Identity) is the service account's token
        # exchanged by the cloud SDK: mounted only then
        "automountServiceAccountToken": bool(kaniko.service_account),
        "initContainers": [fetcher],
        "containers": [executor],
        "volumes": volumes,
        **_scheduling(kaniko),
    }
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


class KanikoBuilder:
    """Builds with a Kaniko Job in the cluster; the Job pushes with the builder's identity.

    The Job fetches the model itself, so the agent only needs the model's
    digest (for the content address), never its bytes.
    """

    reads_model = False
    tolerant = True  # the Job may push where the agent itself cannot (IRSA, Workload Identity)

    def __init__(self, images: ImageSettings, kube: KubeLike, namespace: str,
                 artifact_env: Mapping[str, str]) -> None:
        self.images = images
        self.kube = kube
        self.namespace = namespace
        self.artifact_env = artifact_env

    def recipe(self, model_path: str) -> str:
        """What, besides model and base digests, goes into the content address."""
        return f"{KANIKO_RECIPE}/{BUILDER_RECIPE}/{self.images.recipe_version}/{model_path}"

    def build(self, dest: Destination, spec: DeploymentSpec, source: object, model_path: str,
              labels: Mapping[str, str], report: Callable[..., None]) -> tuple[str, dict[str, Any]]:
        """Run the Job to completion; (pushed digest, event details). `source` is unused."""
        if not spec.model.uri:
            raise BuildError(f"deployment {spec.id}: the model has no uri to build from")
        job = render_build_job(
            destination=str(dest.ref), base_image=dest.base_image, model_uri=spec.model.uri,
            model_path=model_path, images=self.images, namespace=self.namespace,
            labels=labels, artifact_env=self.artifact_env, model_digest=spec.model.digest,
            model_credentials_secret=spec.model.credentials_secret,
            deployment_id=spec.id, model_id=spec.model.id)
        kaniko = self.images.kaniko
        digest = run_build_job(self.kube, job, report, kaniko.poll_interval_seconds,
                               kaniko.log_tail_lines,
                               secret=build_secret(job, spec.model.uri))
        if dest.registry is not None:
            try:
                digest = dest.registry.manifest_digest(dest.ref.repository, dest.tag) or digest
            except RegistryError as exc:
                log.warning("cannot read the digest of %s from %s after the build (%s); using "
                            "the digest the Kaniko Job reported", dest.ref, dest.ref.registry, exc)
        return digest, {}

"""The doctor's checks, one function each, apart from how they are run and printed.

A check returns a `CheckResult`, raises `Skip` when it does not apply, and
raises anything else to FAIL; `agent.doctor` pairs each with its fix hint.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agent.errors import AgentError
from agent.rbac import required_permissions

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.images.registry import Registry
    from agent.plugins.kubernetes.client import KubeClient

Status = Literal["OK", "FAIL", "SKIP"]


@dataclass(frozen=True)
class CheckResult:
    """The answer of one check; `fix` says what to do when it is not OK."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks share: the settings, the options and lazily made clients."""

    settings: Settings
    model_uri: str | None = None
    _kube: KubeClient | None = field(default=None, repr=False)

    def kube(self) -> KubeClient:
        if self._kube is None:
            from agent.plugins.kubernetes.client import KubeClient

            self._kube = KubeClient(self.settings.plugin.kubernetes)
        return self._kube

    def close(self) -> None:
        """Release the clients' connections."""
        if self._kube is not None:
            self._kube.close()

    def registry(self, host: str, base: bool = False) -> Registry:
        """A registry client with the configured credentials (base: the base image's)."""
        from agent.images.auth import registry_provider
        from agent.images.registry import Registry

        images = self.settings.images
        return Registry(host, images, registry_provider(images, host, base=base))


class Skip(Exception):
    """A check that does not apply (or cannot run here); the message says why."""


Check = Callable[[Context], CheckResult]


def _missing(module: str) -> Skip:
    return Skip(f"{module} is not part of this build")


@contextmanager
def _optional(module: str) -> Iterator[None]:
    """Turn a missing optional module (a build without it) into a SKIP."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("agent"):
            raise _missing(module) from None
        raise


def check_control_plane(ctx: Context) -> CheckResult:
    cp_settings = ctx.settings.control_plane
    where = cp_settings.mlflow.tracking_uri if cp_settings.kind == "mlflow" else cp_settings.url
    with _optional("the control-plane client"):
        from agent.controlplane import open_control_plane

        control_plane = open_control_plane(ctx.settings)
    try:
        known = control_plane.known_deployment_ids()
        control_plane.pending()
    finally:
        control_plane.close()
    count = "unknown" if known is None else str(len(known))
    return CheckResult("control-plane", "OK",
                       f"{cp_settings.kind} control plane {where} answered "
                       f"(environment {cp_settings.environment_id}, deployments: {count})")


def control_plane_fix(ctx: Context, exc: Exception) -> str:
    cp = ctx.settings.control_plane
    text = str(exc).lower()
    if any(word in text for word in ("connect", "resolve", "timed out", "timeout", "refused")):
        return (f"cannot reach {cp.url if cp.kind == 'native' else cp.mlflow.tracking_uri}: check "
                "controlPlane.url, DNS, proxies and network policies between agent and control "
                "plane")
    if any(word in text for word in ("401", "403", "unauthor", "forbidden", "token")):
        return ("the control plane refused the token: check the secret named by "
                "controlPlane.apiTokenSecret (key and value) and that it belongs to "
                f"environment {cp.environment_id}")
    if any(word in text for word in ("certificate", "ssl", "tls")):
        return ("TLS failed: give the control plane's CA with controlPlane.caBundle "
                "(control_plane.ca_bundle)")
    if "404" in text or "not found" in text:
        return (f"check controlPlane.environmentId ({cp.environment_id}): the control plane "
                "must know this prediction environment")
    return "check controlPlane.url and the control plane's logs"


def check_permissions(ctx: Context) -> CheckResult:
    if ctx.settings.plugin.name != "kubernetes":
        raise Skip(f"plugin {ctx.settings.plugin.name} does not use the Kubernetes API")
    namespace = ctx.settings.plugin.kubernetes.namespace
    with _optional("the Kubernetes client"):
        kube = ctx.kube()
    missing: list[str] = []
    needed = required_permissions(ctx.settings)
    for perm in needed:
        resource, _, subresource = perm.resource.partition("/")
        for verb in perm.verbs:
            attrs = {"namespace": namespace, "verb": verb, "group": perm.api_group,
                     "resource": resource}
            if subresource:
                attrs["subresource"] = subresource
            review = kube.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                body={"apiVersion": "authorization.k8s.io/v1",
                      "kind": "SelfSubjectAccessReview",
                      "spec": {"resourceAttributes": attrs}},
                verb="create",
            )
            if not (review.get("status") or {}).get("allowed"):
                group = perm.api_group or "core"
                missing.append(f"{verb} {perm.resource} ({group})")
    total = sum(len(p.verbs) for p in needed)
    if missing:
        return CheckResult(
            "permissions", "FAIL",
            f"{len(missing)} of {total} permissions missing in namespace {namespace}: "
            + ", ".join(missing),
            "install with rbac.create=true (the chart's Role grants exactly these), or add the "
            "missing verbs to the Role bound to the agent's service account",
        )
    return CheckResult("permissions", "OK",
                       f"all {total} permissions granted in namespace {namespace}")


def check_ingress_class(ctx: Context) -> CheckResult:
    kube_settings = ctx.settings.plugin.kubernetes
    if ctx.settings.plugin.name != "kubernetes":
        raise Skip(f"plugin {ctx.settings.plugin.name} does not create Ingresses")
    if kube_settings.ingress_mode not in ("nginx", "prefix"):
        raise Skip(f"ingress mode {kube_settings.ingress_mode} uses no IngressClass")
    name = kube_settings.ingress_class_name
    if not name:
        raise Skip("no ingress class configured: the cluster's default class is used")
    with _optional("the Kubernetes client"):
        from agent.errors import PermissionDeniedError
        from agent.plugins.kubernetes.client import NotFoundError

        kube = ctx.kube()
    try:
        kube.request("GET", f"/apis/networking.k8s.io/v1/ingressclasses/{name}")
    except PermissionDeniedError:
        raise Skip(f"cannot read IngressClasses (cluster-scoped); check that {name!r} exists: "
                   "kubectl get ingressclass") from None
    except NotFoundError:
        return CheckResult(
            "ingress-class", "FAIL", f"IngressClass {name!r} does not exist",
            "set predictionServer.ingressClassName to one of `kubectl get ingressclass`, or "
            "install that ingress controller",
        )
    return CheckResult("ingress-class", "OK", f"IngressClass {name!r} exists")


def _target(ctx: Context) -> tuple[str, str]:
    """(registry host, repository) of the generated images."""
    images = ctx.settings.images
    if images.builder == "none":
        raise Skip("images.builder is none: no image is pushed")
    if not images.generated_image_repository:
        raise Skip("images.generated_image_repository is not set")
    with _optional("the image builder"):
        from agent.images.naming import parse_reference
    ref = parse_reference(images.generated_image_repository)
    return ref.registry, ref.repository


def check_registry_push(ctx: Context) -> CheckResult:
    host, repository = _target(ctx)
    if ctx.settings.images.builder == "kaniko":
        note = " (as the agent; Kaniko pushes with the builder's credentials)"
    else:
        note = ""
    registry = ctx.registry(host)
    registry.provider.ensure_repository(host, repository)
    data = f"management-agent doctor {uuid.uuid4()}\n".encode()
    digest = registry.push_blob(repository, data)
    registry.request(
        "DELETE", f"/v2/{repository}/blobs/{digest}", [registry.push_scope(repository)],
        ok=(200, 202, 404, 405), what=f"delete test blob from {repository}", retry=False,
    )
    return CheckResult("registry-push", "OK", f"pushed a test blob to {host}/{repository}{note}")


def registry_fix(ctx: Context) -> str:
    creds = ctx.settings.images.credentials
    return (
        "check imageBuilder.generatedImageRepository and the registry credentials "
        f"(provider {creds.provider}): imageBuilder.secretName (docker config), IRSA / Workload "
        "Identity annotations on the builder service account, imageBuilder.registryCA for a "
        "private CA, imageBuilder.insecureRegistries for plain HTTP"
    )


def check_base_image(ctx: Context) -> CheckResult:
    if ctx.settings.plugin.name != "kubernetes":
        raise Skip("no server profiles outside the kubernetes plugin")
    with _optional("the server profiles"):
        from agent.images.naming import parse_reference
        from agent.plugins.kubernetes.profiles import DEFAULT_PROFILE, profiles
    kube_settings = ctx.settings.plugin.kubernetes
    name = kube_settings.default_server_profile or DEFAULT_PROFILE
    profile = profiles(kube_settings).get(name)
    if profile is None:
        return CheckResult("base-image", "FAIL", f"unknown default server profile {name!r}",
                           "set predictionServer.defaultServerProfile to a known profile")
    if not profile.image:
        raise Skip(f"profile {name} names no base image (deployments bring their own)")
    ref = parse_reference(profile.image)
    registry = ctx.registry(ref.registry, base=True)
    digest = registry.manifest_digest(ref.repository, ref.reference)
    if digest is None:
        return CheckResult("base-image", "FAIL", f"{profile.image} (profile {name}) not found",
                           "fix the profile's image (predictionServer.serverProfiles) or push it")
    return CheckResult("base-image", "OK", f"{profile.image} (profile {name}) is {digest[:19]}")


def check_ecr_repository(ctx: Context) -> CheckResult:
    ecr_host, repository = _target(ctx)
    from agent.images.auth import ECR_HOST, EcrProvider

    creds = ctx.settings.images.credentials
    if not (ECR_HOST.match(ecr_host) or ecr_host == creds.ecr_registry_override):
        raise Skip("the generated image repository is not on ECR")
    provider = EcrProvider(creds.aws_region, creds.ecr_endpoint_url, creds.ecr_create_repositories)
    client = provider._client(ecr_host)
    account = ECR_HOST.match(ecr_host)
    extra = {"registryId": account.group("account")} if account else {}
    from botocore.exceptions import ClientError

    try:
        client.describe_repositories(repositoryNames=[repository], **extra)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code != "RepositoryNotFoundException":
            raise AgentError(f"ECR DescribeRepositories failed ({code})") from None
        if not creds.ecr_create_repositories:
            return CheckResult(
                "ecr-repository", "FAIL", f"ECR repository {repository} does not exist",
                f"aws ecr create-repository --repository-name {repository}, or set "
                "imageBuilder.ecr.createRepositories=true (needs ecr:CreateRepository)",
            )
        provider.ensure_repository(ecr_host, repository)
        return CheckResult("ecr-repository", "OK", f"created ECR repository {repository}")
    return CheckResult("ecr-repository", "OK", f"ECR repository {repository} exists")


def check_artifact_store(ctx: Context) -> CheckResult:
    if not ctx.model_uri:
        raise Skip("no --model-uri given")
    with _optional("the artifact fetcher"):
        from agent.artifacts import open_model
    credentials = None
    secret = ctx.settings.artifacts.default_credentials_secret
    if secret and ctx.settings.plugin.name == "kubernetes":
        credentials = ctx.kube().read_secret(secret)
    with open_model(ctx.model_uri, ctx.settings.artifacts, credentials) as source:
        count = sum(1 for _ in source.files())
        digest = source.digest
    return CheckResult("artifact-store", "OK",
                       f"{ctx.model_uri}: {count} file(s), {digest[:19]}")

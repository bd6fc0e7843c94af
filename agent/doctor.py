"""`management-agent doctor`: preflight checks that say, in plain words, what to fix.

Run it where the agent runs (the chart's `helm test` hook does) with the same
settings: it checks the control plane and the token, the service account's
permissions, the ingress class, a push to the generated image repository, the
base server images, the ECR repository and, given `--model-uri`, the artifact
store. Each check answers OK, FAIL or SKIP with a hint; any FAIL makes the
exit code 1 (2 when the settings themselves are invalid).

`REQUIRED_PERMISSIONS` is the one list of what the agent does in the cluster;
the chart's Role grants exactly that (tests/chart checks it).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from agent.config import Settings
    from agent.images.registry import Registry
    from agent.plugins.kubernetes.client import KubeClient

Status = Literal["OK", "FAIL", "SKIP"]

#: Objects of a prediction server: server-side apply (PATCH; `create` too, for API servers
#: that authorise the first apply as a create), get/list for status, stop and pruning.
MANAGE = ("get", "list", "create", "patch", "delete")
READ = ("get", "list")


@dataclass(frozen=True)
class Permission:
    """One RBAC rule the agent needs in the prediction namespace, and why."""

    api_group: str
    resource: str  # "pods/log" for a subresource
    verbs: tuple[str, ...]
    why: str
    when: str = "always"  # a key of CONDITIONS


#: Derived from the calls of agent/plugins/kubernetes (apply, prune, stop, status),
#: agent/images/kaniko.py and agent/leader.py; the chart's Role mirrors it.
REQUIRED_PERMISSIONS: tuple[Permission, ...] = (
    Permission("apps", "deployments", MANAGE, "run prediction servers"),
    Permission("", "services", MANAGE, "give each prediction server a Service"),
    Permission("autoscaling", "horizontalpodautoscalers", MANAGE, "per-deployment autoscaling"),
    Permission("policy", "poddisruptionbudgets", MANAGE, "per-deployment disruption budgets"),
    Permission("networking.k8s.io", "networkpolicies", MANAGE, "per-deployment network policies"),
    Permission("networking.k8s.io", "ingresses", MANAGE,
               "expose prediction servers (other ingress modes still prune old Ingresses)"),
    Permission("route.openshift.io", "routes", MANAGE, "expose prediction servers", "route"),
    Permission("route.openshift.io", "routes/custom-host", ("create", "update"),
               "set the Route host from the outfacing URL", "route"),
    Permission("gateway.networking.k8s.io", "httproutes", MANAGE, "expose prediction servers",
               "gateway"),
    Permission("", "pods", READ, "follow rollouts and report crash reasons"),
    Permission("", "pods/log", ("get",), "put build and crash logs into failure messages"),
    Permission("", "events", READ, "explain failed rollouts"),
    Permission("", "secrets", ("get",), "read model-store and registry credentials"),
    Permission("batch", "jobs", ("create", "get", "delete"), "run Kaniko builds (finished "
               "Jobs expire by TTL; a failed one is deleted so a retry can rebuild)", "kaniko"),
    Permission("coordination.k8s.io", "leases", ("get", "create", "update"),
               "leader election", "leader_election"),
)

CONDITIONS: dict[str, Callable[[Settings], bool]] = {
    "always": lambda s: True,
    "route": lambda s: s.plugin.kubernetes.ingress_mode == "openshift-route",
    "gateway": lambda s: s.plugin.kubernetes.ingress_mode == "gateway",
    "kaniko": lambda s: s.images.builder == "kaniko",
    "leader_election": lambda s: s.runtime.leader_election.enabled,
}


def required_permissions(settings: Settings) -> list[Permission]:
    """The rules these settings need (ingress mode, builder and leader election decide)."""
    return [p for p in REQUIRED_PERMISSIONS if CONDITIONS[p.when](settings)]


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
        from agent.images.auth import provider_for
        from agent.images.registry import Registry

        images = self.settings.images
        creds = images.base_credentials if base and images.base_credentials else images.credentials
        return Registry(host, images, provider_for(creds, host))


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


# ---- checks ----------------------------------------------------------------------------


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


def _control_plane_fix(ctx: Context, exc: Exception) -> str:
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


def _registry_fix(ctx: Context) -> str:
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


CHECKS: dict[str, tuple[Check, Callable[[Context, Exception], str]]] = {
    "control-plane": (check_control_plane, _control_plane_fix),
    "permissions": (check_permissions, lambda c, e: (
        "check the agent's service account and that the Kubernetes API is reachable")),
    "ingress-class": (check_ingress_class, lambda c, e: "check predictionServer.ingressClassName"),
    "registry-push": (check_registry_push, lambda c, e: _registry_fix(c)),
    "base-image": (check_base_image, lambda c, e: (
        "check the server profile's image, imageBuilder.baseImageSecretName for a private "
        "registry, and that the registry is reachable")),
    "ecr-repository": (check_ecr_repository, lambda c, e: (
        "check the IRSA role (ecr:DescribeRepositories, ecr:CreateRepository) and the region")),
    "artifact-store": (check_artifact_store, lambda c, e: (
        "check the model URI, artifacts.defaultCredentialsSecret (or the deployment's secret), "
        "artifacts.s3EndpointUrl and artifacts.caBundle")),
}


def run_checks(ctx: Context, skip: Sequence[str] = ()) -> list[CheckResult]:
    """Run every check (a crash in one is that check's FAIL, never the doctor's)."""
    results: list[CheckResult] = []
    for name, (check, fix) in CHECKS.items():
        if name in skip:
            results.append(CheckResult(name, "SKIP", "skipped with --skip"))
            continue
        try:
            results.append(check(ctx))
        except Skip as exc:
            results.append(CheckResult(name, "SKIP", str(exc)))
        except Exception as exc:  # every failure is reported, none ends the run
            detail = str(exc) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
            results.append(CheckResult(name, "FAIL", detail, fix(ctx, exc)))
    return results


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table, then one `fix:` line per failed check."""
    width = max([len("CHECK"), *(len(r.name) for r in results)])
    lines = [f"{'CHECK':<{width}}  {'RESULT':<6}  DETAIL"]
    for result in results:
        lines.append(f"{result.name:<{width}}  {result.status:<6}  {result.detail}")
        if result.status == "FAIL" and result.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {result.fix}")
    failed = sum(r.status == "FAIL" for r in results)
    lines.append("")
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines)


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(r.status == "FAIL" for r in results) else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options: the same settings options as `run`, plus its own."""
    from agent.cli import _add_settings_arguments

    _add_settings_arguments(parser)
    parser.add_argument("--model-uri", help="also fetch this model to check the artifact store")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(CHECKS),
                        metavar="CHECK", help=f"skip a check (repeatable): {', '.join(CHECKS)}")


def main(args: argparse.Namespace) -> int:
    """Load the settings, run the checks, print them; 0 all good, 1 a check failed, 2 bad config."""
    from agent.cli import _settings_overrides
    from agent.config import load_settings

    try:
        settings = load_settings(args.config, overrides=_settings_overrides(args))
    except ConfigError as exc:
        results = [CheckResult("config", "FAIL", str(exc),
                               "fix the listed settings (chart values or --set)")]
        _print(results, args.json)
        return 2
    ctx = Context(settings, args.model_uri)
    try:
        results = [CheckResult("config", "OK", "settings are valid"),
                   *run_checks(ctx, args.skip)]
    finally:
        ctx.close()
    _print(results, args.json)
    return exit_code(results)


def _print(results: Sequence[CheckResult], as_json: bool) -> None:
    if as_json:
        data: dict[str, Any] = {"ok": exit_code(results) == 0,
                                "checks": [asdict(r) for r in results]}
        print(json.dumps(data, indent=2))
    else:
        print(format_table(results))
    sys.stdout.flush()

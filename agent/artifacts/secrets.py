"""`management-agent secrets migrate --namespace NS [--dry-run]`.

Finds the secrets the Deployments of a namespace reference (containers' env
`secretKeyRef`, `envFrom` `secretRef`, `secret` and projected volumes, and the
`management-agent.io/credentials-secret` annotation/label the kubernetes
plugin puts on managed Deployments) and adds the keys of the S3 credential
formats a secret lacks: AWS style <-> rclone style (remote `s3` unless
--remote); Seldon-style secrets get both. Keys are only ever added (a JSON merge
patch of `data`), never changed or removed. It prints which keys it adds,
never a value. It talks to the cluster through the agent's `KubeClient` (rate
limit, retries, 403 hints).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from agent.artifacts.credentials import parse_credentials, rclone_remotes, register_credentials
from agent.artifacts.settings import ArtifactSettings
from agent.errors import AgentError, ArtifactError

ANNOTATION = "management-agent.io/credentials-secret"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="secrets_command", required=True, metavar="COMMAND")
    migrate = commands.add_parser(
        "migrate", help="add missing credential-format keys to referenced secrets"
    )
    migrate.add_argument("--namespace", "-n", required=True)
    migrate.add_argument("--dry-run", action="store_true", help="print, change nothing")
    migrate.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube)")
    migrate.add_argument("--context", help="kubeconfig context")
    migrate.add_argument("--remote", default="s3", help="rclone remote name to write (s3)")
    migrate.add_argument("--secret", dest="secrets", action="append", default=[],
                         metavar="NAME", help="also migrate this secret (repeatable)")


def referenced_secrets(deployments: Iterable[Mapping[str, Any]]) -> set[str]:
    """Secret names a list of Deployment objects (as dicts) refer to."""
    names: set[str] = set()
    for dep in deployments:
        for meta in (dep.get("metadata") or {},
                     ((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}):
            for field in ("annotations", "labels"):
                value = (meta.get(field) or {}).get(ANNOTATION)
                if value:
                    names.add(value)
        pod = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                if ref.get("name"):
                    names.add(ref["name"])
            for source in container.get("envFrom") or []:
                ref = source.get("secretRef") or {}
                if ref.get("name"):
                    names.add(ref["name"])
        for volume in pod.get("volumes") or []:
            secret = volume.get("secret") or {}
            if secret.get("secretName"):
                names.add(secret["secretName"])
            for source in (volume.get("projected") or {}).get("sources") or []:
                ref = source.get("secret") or {}
                if ref.get("name"):
                    names.add(ref["name"])
    return names


def plan_additions(data: Mapping[str, str], annotations: Mapping[str, str] | None = None,
                   remote: str = "s3") -> dict[str, str]:
    """The keys (and values) to add so that both AWS and rclone styles are present."""
    creds = parse_credentials(data, annotations).s3
    if creds is None or not creds.has_keys:
        return {}
    add: dict[str, str] = {}
    has_rclone = any(r.get("TYPE", "").lower() == "s3" for r in rclone_remotes(data).values())
    if not has_rclone:
        prefix = f"RCLONE_CONFIG_{remote.upper()}_"
        add[prefix + "TYPE"] = "s3"
        add[prefix + "PROVIDER"] = "Other" if creds.endpoint_url else "AWS"
        add[prefix + "ENV_AUTH"] = "false"
        add[prefix + "ACCESS_KEY_ID"] = creds.access_key_id or ""
        add[prefix + "SECRET_ACCESS_KEY"] = creds.secret_access_key or ""
        if creds.session_token:
            add[prefix + "SESSION_TOKEN"] = creds.session_token
        if creds.endpoint_url:
            add[prefix + "ENDPOINT"] = creds.endpoint_url
        if creds.region:
            add[prefix + "REGION"] = creds.region
    if "AWS_ACCESS_KEY_ID" not in data:
        add["AWS_ACCESS_KEY_ID"] = creds.access_key_id or ""
        add["AWS_SECRET_ACCESS_KEY"] = creds.secret_access_key or ""
        if creds.session_token:
            add["AWS_SESSION_TOKEN"] = creds.session_token
        if creds.endpoint_url:
            add["AWS_ENDPOINT_URL"] = creds.endpoint_url
            add["USE_SSL"] = "1" if creds.endpoint_url.startswith("https://") else "0"
        if creds.region:
            add["AWS_DEFAULT_REGION"] = creds.region
    return {k: v for k, v in add.items() if k not in data}


class Cluster(Protocol):
    """What `migrate` needs of `agent.plugins.kubernetes.client.KubeClient`."""

    def list(self, api_version: str, kind: str, namespace: str | None = None
             ) -> list[dict[str, Any]]: ...
    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None: ...
    def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
              namespace: str | None = None) -> dict[str, Any]: ...


def migrate(kube: Cluster, namespace: str, dry_run: bool = False, remote: str = "s3",
            extra: Iterable[str] = (), out: Any = None) -> int:
    """Run the migration through `kube` (a KubeClient); return the exit code."""
    out = out or sys.stdout
    deployments = kube.list("apps/v1", "Deployment", namespace)
    names = referenced_secrets(deployments) | set(extra)
    if not names:
        print(f"namespace {namespace}: no secrets referenced by deployments", file=out)
        return 0
    failures = 0
    for name in sorted(names):
        where = f"secret {namespace}/{name}"
        try:
            secret = kube.get("v1", "Secret", name, namespace)
        except AgentError as exc:
            print(f"{where}: cannot read ({exc}), skipped", file=out)
            failures += 1
            continue
        if secret is None:
            print(f"{where}: not found, skipped", file=out)
            continue
        additions = plan_additions(_decoded(secret), (secret.get("metadata") or {}).get(
            "annotations") or {}, remote)
        if not additions:
            print(f"{where}: nothing to add", file=out)
            continue
        keys = ", ".join(sorted(additions))
        if dry_run:
            print(f"{where}: would add {keys} (dry run)", file=out)
            continue
        # a merge patch of `data` adds keys and leaves the others as they are
        body = {"data": {k: base64.b64encode(v.encode()).decode() for k, v in additions.items()}}
        try:
            kube.patch("v1", "Secret", name, body, namespace)
        except AgentError as exc:
            print(f"{where}: patch failed ({exc})", file=out)
            failures += 1
            continue
        print(f"{where}: added {keys}", file=out)
    return 1 if failures else 0


def _decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (secret.get("data") or {}).items()}
    for k, v in (secret.get("stringData") or {}).items():
        data.setdefault(k, v)
    return data


def main(args: argparse.Namespace) -> int:
    if args.secrets_command != "migrate":  # pragma: no cover - argparse enforces it
        return 2
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    # a command someone waits for: fewer retries than the agent's default
    settings = KubernetesSettings(
        namespace=args.namespace, kubeconfig=args.kubeconfig, context=args.context,
        in_cluster=False if (args.kubeconfig or args.context) else None, api_retries=2)
    try:
        kube = KubeClient(settings)
        try:
            return migrate(kube, args.namespace, args.dry_run, args.remote, args.secrets)
        finally:
            kube.close()
    except AgentError as exc:
        print(f"management-agent secrets migrate: error talking to the cluster ({exc}); "
              "check --kubeconfig/--context and the RBAC (list deployments, get/patch secrets)",
              file=sys.stderr)
        return 1


# -- which Secrets a deployment may name (ops' policy) -------------------------------------------

def check_credentials_secret(name: str, labels: Mapping[str, str] | None,
                             settings: ArtifactSettings) -> None:
    """Refuse a credentials Secret a deployment names outside the ops' policy.

    Without a policy, a deployment could name any Secret of the namespace (the agent's
    own token, the registry push secret) and have it sent to a host of its choosing.
    `artifacts.credentials_secret_prefix` and `artifacts.credentials_secret_label` (chart
    values) restrict the choice; `artifacts.default_credentials_secret` is exempt (ops
    chose it). Raises ArtifactError, reported to the control plane as the action's failure.
    """
    prefix, label = settings.credentials_secret_prefix, settings.credentials_secret_label
    if prefix and not name.startswith(prefix):
        raise ArtifactError(
            f"credentials secret {name!r} may not be used by deployments: its name must start "
            f"with {prefix!r} (artifacts.credentials_secret_prefix)")
    if label:
        key, sep, value = label.partition("=")
        have = (labels or {}).get(key.strip())
        if have is None or (sep and have != value.strip()):
            raise ArtifactError(
                f"credentials secret {name!r} may not be used by deployments: it lacks the "
                f"label {label} (artifacts.credentials_secret_label)")


def read_credentials_secret(kube: Any, name: str, settings: ArtifactSettings) -> dict[str, str]:
    """The decoded data of a deployment's credentials Secret, after the policy check.

    `kube` is a KubeClient (`get(api_version, kind, name)`). Only the credential fields
    are registered with the log scrubber (not endpoints, regions or flags).
    """
    secret = kube.get("v1", "Secret", name)
    if secret is None:
        raise ArtifactError(f"credentials secret {name!r} not found")
    meta = secret.get("metadata") or {}
    if name != settings.default_credentials_secret:
        check_credentials_secret(name, meta.get("labels"), settings)
    data = _decoded(secret)
    register_credentials(data)
    return data

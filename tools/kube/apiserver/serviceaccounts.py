"""The ServiceAccount admission plugin's part that pods depend on.

On pod create (plugin/pkg/admission/serviceaccount): an empty ``serviceAccountName``
becomes ``default``; a pod naming a ServiceAccount that does not exist is refused (403,
``error looking up service account ns/name: serviceaccount "name" not found``; a
ReplicaSet or Job then reports FailedCreate and retries); a pod without
``imagePullSecrets`` gets the ServiceAccount's, which is how the kubelet comes to pull
with them. The token volume is not mounted (see docs/kube-standin.md).
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

Obj = dict[str, Any]


def admit_pod(pod: Obj, service_account: Obj | None) -> None:
    """Mutate ``pod`` like the plugin; raise the plugin's 403 when its SA is missing."""
    spec = pod.setdefault("spec", {})
    md = pod.get("metadata") or {}
    sa_name = spec.get("serviceAccountName") or "default"
    spec["serviceAccountName"] = sa_name
    if service_account is None:
        ns, name = md.get("namespace", ""), md.get("name", "")
        raise ApiError(403, "Forbidden",
                       f'pods "{name}" is forbidden: error looking up service account '
                       f'{ns}/{sa_name}: serviceaccount "{sa_name}" not found',
                       {"name": name, "kind": "pods"})
    if not spec.get("imagePullSecrets"):
        refs = [{"name": s["name"]} for s in service_account.get("imagePullSecrets") or []
                if s.get("name")]
        if refs:
            spec["imagePullSecrets"] = refs


def service_account_name(pod: Obj) -> str:
    return (pod.get("spec") or {}).get("serviceAccountName") or "default"

"""The registry of kinds the stand-in serves."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
READ_VERBS = ["get", "list", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "log"
    verbs: tuple[str, ...] = tuple(ALL_VERBS)
    validate: bool = True  # kubernetes-validate schema known
    categories: tuple[str, ...] = ()
    name_rule: str = "subdomain"  # "subdomain" | "label" | "path"
    has_spec: bool = True
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: (group, plural) - versions of a group share storage."""
        return (self.group, self.plural)


_ALL = ("all",)

RESOURCES: list[Resource] = [
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
             subresources=("status",), name_rule="label"),
    Resource("", "v1", "secrets", "Secret", has_spec=False),
    Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",), has_spec=False),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), has_spec=False),
    Resource("", "v1", "pods", "Pod", short_names=("po",), subresources=("status", "log"),
             categories=_ALL),
    Resource("", "v1", "services", "Service", short_names=("svc",), subresources=("status",),
             categories=_ALL, name_rule="label"),
    Resource("", "v1", "endpoints", "Endpoints", short_names=("ep",), has_spec=False),
    Resource("", "v1", "events", "Event", short_names=("ev",), has_spec=False),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",),
             subresources=("status",)),
    Resource("", "v1", "nodes", "Node", namespaced=False, short_names=("no",),
             subresources=("status",)),
    Resource("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
             subresources=("status", "scale"), categories=_ALL),
    Resource("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
             subresources=("status", "scale"), categories=_ALL),
    Resource("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",),
             subresources=("status", "scale"), categories=_ALL),
    Resource("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",),
             subresources=("status",), categories=_ALL),
    Resource("batch", "v1", "jobs", "Job", subresources=("status",), categories=_ALL),
    Resource("batch", "v1", "cronjobs", "CronJob", short_names=("cj",), subresources=("status",),
             categories=_ALL),
    Resource("networking.k8s.io", "v1", "ingresses", "Ingress", short_names=("ing",),
             subresources=("status",)),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
             short_names=("netpol",)),
    Resource("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
             short_names=("hpa",), subresources=("status",), categories=_ALL),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",),
             subresources=("status",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", has_spec=False),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", has_spec=False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False,
             has_spec=False, name_rule="path"),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
             namespaced=False, has_spec=False, name_rule="path"),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
             "SelfSubjectAccessReview", namespaced=False, verbs=("create",)),
    Resource("route.openshift.io", "v1", "routes", "Route", subresources=("status",),
             validate=False),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute",
             subresources=("status",), validate=False),
    Resource("gateway.networking.k8s.io", "v1", "gateways", "Gateway",
             subresources=("status",), validate=False),
    Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", validate=False),
]

_BY_PATH: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> Resource | None:
    group, _, version = api_version.rpartition("/")
    for r in RESOURCES:
        if r.group == group and r.version == version and r.kind == kind:
            return r
    return None


def group_versions() -> dict[str, list[str]]:
    """group -> versions (core group is '')."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if r.group == group and r.version == version]

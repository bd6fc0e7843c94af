"""What the agent may do in the cluster: the one list the chart's Role and `doctor` share.

`REQUIRED_PERMISSIONS` is the one list of what the agent does in the cluster;
the chart's Role grants exactly that (tests/chart checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Settings

#: Objects of a prediction server: server-side apply (PATCH; `create` too, for API servers
#: that authorise the first apply as a create), get/list for status, stop and pruning.
MANAGE = ("get", "list", "create", "patch", "delete")
READ = ("get", "list")
#: Objects of a kind the current settings do not create but an earlier ingress mode may have:
#: stop and prune list them by label and delete them.
PRUNE = ("list", "delete")


@dataclass(frozen=True)
class Permission:
    """One RBAC rule the agent needs in the prediction namespace, and why."""

    api_group: str
    resource: str  # "pods/log" for a subresource
    verbs: tuple[str, ...]
    why: str
    when: str = "always"  # a key of CONDITIONS
    otherwise: tuple[str, ...] = ()  # verbs still needed when `when` does not hold


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
    Permission("route.openshift.io", "routes", MANAGE, "expose prediction servers (in other "
               "ingress modes, stop and prune remove Routes an earlier mode created)", "route",
               otherwise=PRUNE),
    Permission("route.openshift.io", "routes/custom-host", ("create", "update"),
               "set the Route host from the outfacing URL", "route"),
    Permission("gateway.networking.k8s.io", "httproutes", MANAGE, "expose prediction servers "
               "(in other ingress modes, stop and prune remove HTTPRoutes an earlier mode "
               "created)", "gateway", otherwise=PRUNE),

    Permission("", "pods", READ, "follow rollouts and report crash reasons"),
    Permission("", "pods/log", ("get",), "put build and crash logs into failure messages"),
    Permission("", "events", READ, "explain failed rollouts"),
    Permission("", "secrets", ("get", "create", "patch", "delete"),
               "read model-store and registry credentials; write each deployment's own Secret "
               "(model URI, last good spec) and each Kaniko build's (model URI); delete one "
               "when the object that was to own it could not be created"),
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
    return [p if CONDITIONS[p.when](settings) else replace(p, verbs=p.otherwise)
            for p in REQUIRED_PERMISSIONS if p.otherwise or CONDITIONS[p.when](settings)]

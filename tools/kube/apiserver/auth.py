"""Authentication (bearer tokens) and optional RBAC for restricted tokens.

The admin user (the kubeconfig's token, or no token) may do everything.
Tokens given with --restricted-token TOKEN=ns/sa act as that ServiceAccount and
are authorized by evaluating Roles/RoleBindings (and ClusterRoles/-Bindings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .storage import Store


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    restricted: bool = False
    sa_namespace: str = ""
    sa_name: str = ""


ADMIN = User("admin", ("system:masters", "system:authenticated"))


@dataclass
class Authenticator:
    restricted: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (ns, sa)

    def user(self, authorization: str | None) -> User | None:
        """None means 401 (an unknown token is rejected only in RBAC mode)."""
        token = ""
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if token in self.restricted:
            ns, sa = self.restricted[token]
            return User(f"system:serviceaccount:{ns}:{sa}",
                        ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                         "system:authenticated"), True, ns, sa)
        return ADMIN


def _matches(rule: dict[str, Any], verb: str, group: str, resource: str, name: str) -> bool:
    groups = rule.get("apiGroups") or []
    resources = rule.get("resources") or []
    verbs = rule.get("verbs") or []
    names = rule.get("resourceNames") or []
    if "*" not in verbs and verb not in verbs:
        return False
    if "*" not in groups and group not in groups:
        return False
    base = resource.split("/")[0]
    if "*" not in resources and resource not in resources and \
            not (f"{base}/*" in resources and "/" in resource):
        return False
    return not (names and name not in names)


def _subject_matches(subj: dict[str, Any], user: User, binding_ns: str) -> bool:
    kind = subj.get("kind")
    if kind == "ServiceAccount":
        return subj.get("name") == user.sa_name and \
            (subj.get("namespace") or binding_ns) == user.sa_namespace
    if kind == "User":
        return subj.get("name") == user.name
    if kind == "Group":
        return subj.get("name") in user.groups
    return False


def allowed(store: Store, user: User, verb: str, group: str, resource: str, namespace: str,
            name: str) -> bool:
    if not user.restricted:
        return True
    bindings: list[tuple[dict[str, Any], str]] = []
    if namespace:
        items, _ = store.list(("rbac.authorization.k8s.io", "rolebindings"), namespace)
        bindings += [(b, namespace) for b in items]
    items, _ = store.list(("rbac.authorization.k8s.io", "clusterrolebindings"))
    bindings += [(b, "") for b in items]
    for b, bns in bindings:
        if not any(_subject_matches(s, user, bns) for s in b.get("subjects") or []):
            continue
        ref = b.get("roleRef") or {}
        if ref.get("kind") == "Role" and bns:
            role = store.get(("rbac.authorization.k8s.io", "roles"), bns, ref.get("name", ""))
        else:
            role = store.get(("rbac.authorization.k8s.io", "clusterroles"), "",
                             ref.get("name", ""))
        if role and any(_matches(r, verb, group, resource, name)
                        for r in role.get("rules") or []):
            return True
    return False


def verb_for(method: str, name: str, watch: bool) -> str:
    if method == "GET":
        return "watch" if watch else ("get" if name else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())

"""Deletion: finalizers, deletionTimestamp, ownerReference garbage collection
(Background, Foreground, Orphan) and namespace termination. Synchronous: the
cascade is done before the DELETE request answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .resources import RESOURCES, Resource, by_kind
from .ssa import now

if TYPE_CHECKING:
    from .api import Api

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"


def _ns(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", ""))


def dependents(api: Api, owner: Obj) -> list[tuple[Resource, Obj]]:
    by_key = {r.key: r for r in RESOURCES}
    return [(by_key[k], o) for k, o in api.store.owned_by(owner["metadata"]["uid"])
            if k in by_key]


def delete(api: Api, res: Resource, obj: Obj, policy: str) -> Obj | None:
    """Delete obj; returns None when it is gone, else the object (pending finalizers)."""
    store = api.store
    md = obj["metadata"]
    if res.plural == "namespaces":
        return _delete_namespace(api, res, obj)
    if md.get("deletionTimestamp"):
        return obj
    if policy == "Orphan":
        for dres, dep in dependents(api, obj):
            refs = [r for r in dep["metadata"].get("ownerReferences") or []
                    if r.get("uid") != md["uid"]]
            if refs:
                dep["metadata"]["ownerReferences"] = refs
            else:
                dep["metadata"].pop("ownerReferences", None)
            store.put(dres.key, dep, "MODIFIED")
    elif policy == "Foreground" and dependents(api, obj):
        md.setdefault("deletionTimestamp", now())
        md["deletionGracePeriodSeconds"] = 0
        if FOREGROUND not in (md.get("finalizers") or []):
            md["finalizers"] = [*(md.get("finalizers") or []), FOREGROUND]
        obj = store.put(res.key, obj, "MODIFIED")
        for dres, dep in dependents(api, obj):
            delete(api, dres, dep, "Foreground")
        return _maybe_finish_foreground(api, res, obj)
    if md.get("finalizers"):
        md["deletionTimestamp"] = now()
        md["deletionGracePeriodSeconds"] = 0
        return store.put(res.key, obj, "MODIFIED")
    gone = store.remove(res.key, _ns(obj), md["name"])
    after_delete(api, res, gone or obj)
    return None


def _maybe_finish_foreground(api: Api, res: Resource, owner: Obj) -> Obj | None:
    cur = api.store.get(res.key, _ns(owner), owner["metadata"]["name"])
    if cur is None:
        return None
    md = cur["metadata"]
    if FOREGROUND not in (md.get("finalizers") or []) or dependents(api, cur):
        return cur
    md["finalizers"] = [f for f in md["finalizers"] if f != FOREGROUND]
    if md["finalizers"]:
        return api.store.put(res.key, cur, "MODIFIED")
    md.pop("finalizers")
    api.store.put(res.key, cur, "MODIFIED")
    gone = api.store.remove(res.key, _ns(cur), md["name"])
    after_delete(api, res, gone or cur)
    return None


def after_delete(api: Api, res: Resource, gone: Obj) -> None:
    """An object disappeared: cascade to dependents, finish waiting owners/namespaces."""
    md = gone["metadata"]
    if res.plural == "services":
        ip = (gone.get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            api.ips.release(ip)
    for dres, dep in dependents(api, gone):
        cur = api.store.get(dres.key, _ns(dep), dep["metadata"]["name"])
        if cur is not None:
            refs = [r for r in cur["metadata"].get("ownerReferences") or []
                    if r.get("uid") != md["uid"] and _owner_exists(api, r, _ns(cur))]
            if not refs:
                delete(api, dres, cur, "Background")
    for ref in md.get("ownerReferences") or []:
        ores = by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
        if ores is None:
            continue
        owner = api.store.get(ores.key, _ns(gone) if ores.namespaced else "", ref.get("name", ""))
        if owner and owner["metadata"].get("uid") == ref.get("uid") and \
                owner["metadata"].get("deletionTimestamp"):
            _maybe_finish_foreground(api, ores, owner)
    ns = _ns(gone)
    if ns and res.plural != "namespaces":
        nsobj = api.store.get(("", "namespaces"), "", ns)
        if nsobj and nsobj["metadata"].get("deletionTimestamp"):
            _finish_namespace(api, nsobj)


def _owner_exists(api: Api, ref: dict[str, Any], ns: str) -> bool:
    ores = by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
    if ores is None:
        return True  # unknown kinds: never collect
    owner = api.store.get(ores.key, ns if ores.namespaced else "", ref.get("name", ""))
    return owner is not None and owner["metadata"].get("uid") == ref.get("uid")


def check_owners(api: Api, res: Resource, obj: Obj) -> None:
    """A new object whose owners are all gone is collected at once (as the GC would)."""
    refs = obj["metadata"].get("ownerReferences") or []
    if refs and not any(_owner_exists(api, r, _ns(obj)) for r in refs):
        delete(api, res, obj, "Background")


def _namespace_content(api: Api, ns: str) -> list[tuple[Resource, Obj]]:
    out = []
    for res in RESOURCES:
        if res.namespaced:
            items, _ = api.store.list(res.key, ns)
            out += [(res, o) for o in items]
    return out


def _delete_namespace(api: Api, res: Resource, obj: Obj) -> Obj | None:
    md = obj["metadata"]
    if not md.get("deletionTimestamp"):
        md["deletionTimestamp"] = now()
        md["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        obj = api.store.put(res.key, obj, "MODIFIED")
    for cres, o in _namespace_content(api, md["name"]):
        cur = api.store.get(cres.key, md["name"], o["metadata"]["name"])
        if cur is not None:
            delete(api, cres, cur, "Background")
    return _finish_namespace(api, obj)


def _finish_namespace(api: Api, nsobj: Obj) -> Obj | None:
    name = nsobj["metadata"]["name"]
    if api.store.has_namespaced(name) or nsobj["metadata"].get("finalizers"):
        return api.store.get(("", "namespaces"), "", name)
    gone = api.store.remove(("", "namespaces"), "", name)
    return None if gone else nsobj

"""The verbs: create, get, list, update, patch, delete, deletecollection, apply."""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import gc, paging, podsecurity, serviceaccounts
from .defaults import ClusterIPs, apply_defaults
from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    invalid,
    method_not_allowed,
    namespace_not_found,
    not_found,
    unsupported_media_type,
)
from .patch import json_patch, merge_patch, strategic_merge_for
from .resources import Resource, by_kind
from .selectors import match_labels, parse_fields, parse_labels
from .ssa import now, record_update, server_side_apply
from .storage import Obj, Store
from .validation import validate_object

GENERATION_KINDS = {"deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs",
                    "ingresses", "networkpolicies", "horizontalpodautoscalers",
                    "poddisruptionbudgets", "ingressclasses", "routes", "httproutes", "gateways",
                    "servicemonitors", "persistentvolumeclaims"}
RETURN_DELETED = {"pods", "services", "namespaces"}
_SERVER_MD = ("uid", "resourceVersion", "creationTimestamp", "generation", "deletionTimestamp",
              "deletionGracePeriodSeconds", "selfLink")


@dataclass
class Request:
    method: str
    res: Resource
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = "application/json"
    user_agent: str = ""
    warnings: list[str] = field(default_factory=list)

    def q(self, key: str, default: str = "") -> str:
        return self.query.get(key, default)

    @property
    def dry_run(self) -> bool:
        return self.q("dryRun") == "All"

    @property
    def manager(self) -> str:
        if self.q("fieldManager"):
            return self.q("fieldManager")
        agent = self.user_agent.split("/", 1)[0] if self.user_agent else ""
        return agent or "unknown"

    @property
    def field_validation(self) -> str:
        return self.q("fieldValidation", "Strict") or "Strict"


def decode(req: Request) -> Any:
    if not req.body:
        raise bad_request("the body of the request is empty")
    if "protobuf" in req.content_type:
        from .proto import decode_protobuf
        return decode_protobuf(req.body)
    try:
        if "yaml" in req.content_type:
            return yaml.safe_load(req.body)
        return json.loads(req.body)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"the body of the request could not be decoded: {exc}") from exc


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.snapshots = paging.Snapshots()
        self.ips = ClusterIPs()
        for _, o in store.iter_all():
            ip = (o.get("spec") or {}).get("clusterIP")
            if o.get("kind") == "Service" and ip and ip != "None":
                self.ips.reserve(ip)

    # ------------------------------------------------------------------ helpers
    def _check_ns(self, req: Request, creating: bool = False) -> None:
        if not req.res.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", req.namespace)
        if ns is None:
            raise namespace_not_found(req.namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           f'{req.res.plural} "{req.name}" is forbidden: unable to create new '
                           f"content in namespace {req.namespace} because it is being terminated",
                           {"name": req.name, "kind": req.res.plural})

    def _current(self, req: Request) -> Obj:
        obj = self.store.get(req.res.key, req.namespace if req.res.namespaced else "", req.name)
        if obj is None:
            raise not_found(req.res, req.name)
        return obj

    def _check_type(self, req: Request, obj: Any) -> Obj:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        res = req.res
        # like the apiserver's decoder: a missing apiVersion/kind defaults from the URL
        api_version = obj.setdefault("apiVersion", res.group_version) or res.group_version
        kind = obj.setdefault("kind", res.kind) or res.kind
        obj["apiVersion"], obj["kind"] = api_version, kind
        if kind != res.kind or api_version != res.group_version:
            if by_kind(str(api_version), str(kind)) is None and kind != res.kind:
                raise bad_request(f"no kind \"{kind}\" is registered for version "
                                  f"\"{api_version}\" in scheme")
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({res.group_version})"
                              if kind == res.kind else
                              f"{kind} in version \"{api_version}\" cannot be handled as a "
                              f"{res.kind}: expected kind {res.kind}")
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        if res.namespaced:
            if md.get("namespace") and req.namespace and md["namespace"] != req.namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            if req.namespace:
                md["namespace"] = req.namespace
        else:
            md.pop("namespace", None)
        return obj

    def _finish(self, req: Request, new: Obj, old: Obj | None) -> Obj:
        """Defaults, validation, generation, managedFields (not for apply), no-op check."""
        res = req.res
        md = new["metadata"]
        if old is not None:
            for k in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds"):
                if k in old["metadata"]:
                    md[k] = old["metadata"][k]
                else:
                    md.pop(k, None)
            if res.plural == "services":
                _keep_cluster_ip(res, old, new)
        apply_defaults(res.plural, new, self.ips)
        try:
            req.warnings += validate_object(res, new, req.field_validation)
        except ApiError:
            ip = (new.get("spec") or {}).get("clusterIP")
            if res.plural == "services" and ip and ip != (old or {}).get("spec", {}).get(
                    "clusterIP"):
                self.ips.release(ip)
            raise
        self._admit(req, new, old)
        if old is not None:
            md["generation"] = old["metadata"].get("generation", 1)
            if res.plural in GENERATION_KINDS and new.get("spec") != old.get("spec"):
                md["generation"] = md["generation"] + 1
            if "generation" not in old["metadata"] and res.plural not in GENERATION_KINDS:
                md.pop("generation", None)
        return new

    def _admit(self, req: Request, new: Obj, old: Obj | None) -> None:
        """Admission after defaulting and validation: ServiceAccount, then PodSecurity."""
        if req.subresource:
            return
        if req.res.key == ("", "namespaces"):
            pods = self.store.list(("", "pods"), new["metadata"]["name"])[0] if old else []
            podsecurity.admit_namespace(new, old, pods, req.warnings)
        elif req.res.group in ("", "apps", "batch"):
            ns_name = new["metadata"].get("namespace", "")
            if req.res.key == ("", "pods") and old is None:
                sa = self.store.get(("", "serviceaccounts"), ns_name,
                                    serviceaccounts.service_account_name(new))
                serviceaccounts.admit_pod(new, sa)
            ns = self.store.get(("", "namespaces"), "", ns_name)
            podsecurity.admit(req.res.plural, new, old, ns, req.warnings)

    def _store(self, req: Request, new: Obj, old: Obj | None) -> Obj:
        if req.dry_run:
            new["metadata"].setdefault("resourceVersion", (old or {}).get(
                "metadata", {}).get("resourceVersion", ""))
            return new
        if old is not None and _same(old, new):
            return old
        md = new["metadata"]
        if old is not None and md.get("deletionTimestamp") and not md.get("finalizers"):
            self.store.put(req.res.key, new, "MODIFIED")
            gone = self.store.remove(req.res.key, md.get("namespace", ""), md["name"])
            gc.after_delete(self, req.res, gone or new)
            return gone or new
        stored = self.store.put(req.res.key, new, "ADDED" if old is None else "MODIFIED")
        if old is None and req.res.plural != "namespaces":
            gc.check_owners(self, req.res, stored)
        if old is None and req.res.plural == "namespaces":
            self._default_service_account(md["name"])
        return stored

    def _default_service_account(self, ns: str) -> None:
        """What the ServiceAccount controller does for every new namespace."""
        if self.store.get(("", "serviceaccounts"), ns, "default") is not None:
            return
        sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "default", "namespace": ns, "uid": str(uuid.uuid4()),
            "creationTimestamp": now()}}
        self.store.put(("", "serviceaccounts"), sa, "ADDED")

    # ------------------------------------------------------------------ verbs
    def get(self, req: Request) -> Obj:
        if req.res.namespaced:
            obj = self.store.get(req.res.key, req.namespace, req.name)
        else:
            obj = self.store.get(req.res.key, "", req.name)
        if obj is None:
            raise not_found(req.res, req.name)
        return obj

    def list(self, req: Request) -> Obj:
        res = req.res
        ns = req.namespace if res.namespaced and req.namespace else None
        labels = parse_labels(req.q("labelSelector"))
        fields = parse_fields(req.q("fieldSelector"), res.plural)

        def keep(o: Obj) -> bool:
            md = o.get("metadata") or {}
            return ((ns is None or md.get("namespace") == ns)
                    and match_labels(labels, md.get("labels")) and fields(o))

        items, meta = paging.page(
            lambda: self.store.list(res.key, ns), key=(*res.key, ns or ""),
            snapshots=self.snapshots, limit=req.q("limit"), token=req.q("continue"),
            resource_version=req.q("resourceVersion"), keep=keep,
            selected=bool(req.q("labelSelector") or req.q("fieldSelector")))
        for o in items:
            o.pop("apiVersion", None)
            o.pop("kind", None)
            o["apiVersion"], o["kind"] = res.group_version, res.kind
        return {"kind": f"{res.kind}List", "apiVersion": res.group_version, "metadata": meta,
                "items": items}

    def create(self, req: Request) -> Obj:
        obj = self._check_type(req, decode(req))
        md = obj["metadata"]
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + "".join(
                random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        req.name = md.get("name", "")
        self._check_ns(req, creating=True)
        for k in _SERVER_MD:
            md.pop(k, None)
        if "managedFields" in md and not md["managedFields"]:
            md.pop("managedFields")
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now()
        if req.res.plural in GENERATION_KINDS:
            md["generation"] = 1
        if "status" in req.res.subresources and req.res.plural != "namespaces":
            obj.pop("status", None)
        self._finish(req, obj, None)
        if "managedFields" not in md:
            record_update(None, obj, req.manager)
        with self.store.lock:
            if self.store.get(req.res.key, md.get("namespace", ""), req.name) is not None:
                raise already_exists(req.res, req.name)
            return self._store(req, obj, None)

    def update(self, req: Request) -> Obj:
        obj = self._check_type(req, decode(req))
        if obj["metadata"].get("name") != req.name:
            raise bad_request(f'the name of the object ({obj["metadata"].get("name")}) does '
                              f"not match the name on the URL ({req.name})")
        self._check_ns(req)
        with self.store.lock:
            old = self.store.get(req.res.key, obj["metadata"].get("namespace", ""), req.name)
            if old is None:
                if req.subresource:
                    raise not_found(req.res, req.name)
                # PUT on a missing object creates it (AllowCreateOnUpdate for most kinds)
                req.body = json.dumps(obj).encode()
                return self.create(req)
            rv = obj["metadata"].get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(req.res, req.name)
            return self._update(req, old, obj)

    def _update(self, req: Request, old: Obj, obj: Obj, apply: bool = False) -> Obj:
        """Write obj over old, honouring subresource semantics."""
        res = req.res
        if req.subresource == "status":
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
            if apply:
                new["metadata"]["managedFields"] = obj["metadata"].get("managedFields", [])
        else:
            new = obj
            if "status" in res.subresources:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        md = new["metadata"]
        md["name"], md["resourceVersion"] = old["metadata"]["name"], \
            old["metadata"]["resourceVersion"]
        if res.namespaced:
            md["namespace"] = old["metadata"]["namespace"]
        if old["metadata"].get("deletionTimestamp") and not req.subresource:
            added = set(md.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise invalid(res, req.name, [{
                    "reason": "FieldValueForbidden", "field": "metadata.finalizers",
                    "message": "Forbidden: no new finalizers can be added if the object is "
                               "being deleted"}])
        self._finish(req, new, old)
        given = new["metadata"].get("managedFields")
        if not apply and given is not None and given != old["metadata"].get("managedFields"):
            # an explicit managedFields write replaces them (kubectl's client-side ->
            # server-side apply migration relies on this); [] resets them
            if not given:
                new["metadata"].pop("managedFields", None)
        elif not apply:
            record_update(old, new, req.manager, req.subresource)
        return self._store(req, new, old)

    def patch(self, req: Request) -> Obj:
        ctype = req.content_type.split(";")[0].strip()
        if ctype == "application/apply-patch+yaml" or ctype == "application/apply-patch+cbor":
            return self.apply(req)
        patch = decode(req)
        self._check_ns(req)
        with self.store.lock:
            old = self._current(req)
            base = copy.deepcopy(old)
            if ctype == "application/json-patch+json":
                new = json_patch(base, patch)
            elif ctype == "application/merge-patch+json":
                new = merge_patch(base, patch)
            elif ctype == "application/strategic-merge-patch+json":
                if not req.res.validate:
                    raise unsupported_media_type(ctype)
                new = strategic_merge_for(base, patch)
            else:
                raise unsupported_media_type(ctype)
            if not isinstance(new, dict):
                raise bad_request("patch produced a non-object")
            new.setdefault("metadata", {})
            rv = new["metadata"].get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(req.res, req.name)
            if new["metadata"].get("uid", old["metadata"]["uid"]) != old["metadata"]["uid"]:
                raise conflict(req.res, req.name, "Precondition failed: UID in precondition: "
                               f"{new['metadata']['uid']}, UID in object meta: "
                               f"{old['metadata']['uid']}")
            new["apiVersion"], new["kind"] = req.res.group_version, req.res.kind
            return self._update(req, old, new)

    def apply(self, req: Request) -> Obj:
        cfg = decode(req)
        if not req.q("fieldManager"):
            raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager "
                              "parameter")
        cfg = self._check_type(req, cfg)
        if cfg["metadata"].get("name") and cfg["metadata"]["name"] != req.name:
            raise bad_request(f'the name of the object ({cfg["metadata"]["name"]}) does not '
                              f"match the name on the URL ({req.name})")
        cfg["metadata"]["name"] = req.name
        force = req.q("force") in ("true", "1")
        manager = req.q("fieldManager")
        self._check_ns(req, creating=True)
        with self.store.lock:
            old = self.store.get(req.res.key, req.namespace if req.res.namespaced else "",
                                 req.name)
            rv = cfg["metadata"].get("resourceVersion")
            if old is not None and rv and rv != old["metadata"]["resourceVersion"]:
                raise conflict(req.res, req.name)
            cfg["metadata"].pop("managedFields", None)
            if old is None:
                if req.subresource:
                    raise not_found(req.res, req.name)
                merged = server_side_apply(None, cfg, manager, force)
                req.body = json.dumps(merged).encode()
                req.content_type = "application/json"
                entries = merged["metadata"].get("managedFields")
                created = self._apply_create(req, merged, entries)
                return created
            merged = server_side_apply(old, cfg, manager, force, req.subresource)
            merged["apiVersion"], merged["kind"] = req.res.group_version, req.res.kind
            return self._update(req, old, merged, apply=True)

    def _apply_create(self, req: Request, obj: Obj, entries: Any) -> Obj:
        md = obj["metadata"]
        for k in _SERVER_MD:
            md.pop(k, None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now()
        if req.res.plural in GENERATION_KINDS:
            md["generation"] = 1
        obj.pop("status", None)
        self._finish(req, obj, None)
        md["managedFields"] = entries
        if self.store.get(req.res.key, md.get("namespace", ""), req.name) is not None:
            raise already_exists(req.res, req.name)
        return self._store(req, obj, None)

    def delete(self, req: Request) -> tuple[int, Obj]:
        opts = delete_options(req)
        policy = opts.get("propagationPolicy") or req.q("propagationPolicy")
        if opts.get("orphanDependents") is True or req.q("orphanDependents") == "true":
            policy = "Orphan"
        if policy and policy not in ("Orphan", "Background", "Foreground"):
            raise bad_request(f"unsupported propagationPolicy {policy!r}")
        pre = opts.get("preconditions") or {}
        self._check_ns(req)
        with self.store.lock:
            obj = self._current(req)
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise conflict(req.res, req.name, "Precondition failed: UID in precondition: "
                               f"{pre['uid']}, UID in object meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and \
                    pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise conflict(req.res, req.name)
            if req.dry_run:
                return 200, obj
            result = gc.delete(self, req.res, obj, policy or "")
        if result is None:
            details = {"name": req.name, **({"group": req.res.group} if req.res.group else {}),
                       "kind": req.res.plural, "uid": obj["metadata"]["uid"]}
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": details}
            if req.res.plural in RETURN_DELETED:
                obj["metadata"].pop("managedFields", None)
                return 200, obj
            return 200, status
        return 202 if result["metadata"].get("finalizers") else 200, result

    def delete_collection(self, req: Request) -> Obj:
        if req.res.namespaced and req.namespace:
            self._check_ns(req)
        listing = self.list(Request("GET", req.res, req.namespace, query=req.query))
        opts = delete_options(req)
        policy = opts.get("propagationPolicy") or req.q("propagationPolicy") or ""
        deleted = []
        with self.store.lock:
            for o in listing["items"]:
                cur = self.store.get(req.res.key, o["metadata"].get("namespace", ""),
                                     o["metadata"]["name"])
                if cur is None:
                    continue
                r = gc.delete(self, req.res, cur, policy)
                deleted.append(r or cur)
        return {"kind": f"{req.res.kind}List", "apiVersion": req.res.group_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted}


def _keep_cluster_ip(res: Resource, old: Obj, new: Obj) -> None:
    """spec.clusterIP is immutable; an update that omits it keeps the allocated one."""
    old_ip = (old.get("spec") or {}).get("clusterIP")
    spec = new.get("spec")
    if not old_ip or not isinstance(spec, dict):
        return
    ip = spec.get("clusterIP")
    if not ip:
        spec["clusterIP"] = old_ip
        spec.setdefault("clusterIPs", (old.get("spec") or {}).get("clusterIPs", [old_ip]))
    elif ip != old_ip:
        raise invalid(res, new["metadata"].get("name", ""), [{
            "reason": "FieldValueInvalid", "field": "spec.clusterIPs[0]",
            "message": f"Invalid value: []string{{\"{ip}\"}}: may not change once set"}])


def delete_options(req: Request) -> dict[str, Any]:
    if not req.body:
        return {}
    try:
        opts = decode(req)
    except ApiError as exc:
        raise bad_request(f"invalid DeleteOptions: {exc.message}") from exc
    if not isinstance(opts, dict):
        raise bad_request("invalid DeleteOptions: not an object")
    return opts


def filter_items(req: Request, items: list[Obj]) -> list[Obj]:
    labels = parse_labels(req.q("labelSelector"))
    fields = parse_fields(req.q("fieldSelector"), req.res.plural)
    return [o for o in items
            if match_labels(labels, (o.get("metadata") or {}).get("labels")) and fields(o)]


def _same(old: Obj, new: Obj) -> bool:
    def strip(o: Obj) -> Obj:
        o = copy.deepcopy(o)
        md = o.get("metadata", {})
        md.pop("resourceVersion", None)
        for e in md.get("managedFields") or []:
            e.pop("time", None)
        return o
    return strip(old) == strip(new)


def check_method(res: Resource, verb: str) -> None:
    if verb not in res.verbs:
        raise method_not_allowed()

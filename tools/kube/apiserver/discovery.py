"""/version, /api, /apis, /apis/<g>/<v> and a minimal /openapi/v3.

Only the legacy (unaggregated) discovery documents are served: kubectl and
helm fall back to them when the response is plain application/json."""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import RESOURCES, Resource, group_versions, in_group_version
from .version import info as _version_info

VERSION = _version_info()  # at import; the server answers /version with version.info()


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _hash(r: Resource) -> str:
    return hashlib.sha256(f"{r.group}/{r.version}/{r.kind}".encode()).hexdigest()[:12]


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    items = in_group_version(group, version)
    if not items:
        return None
    out: list[dict[str, Any]] = []
    for r in items:
        entry: dict[str, Any] = {
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": list(r.verbs), "storageVersionHash": _hash(r)}
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        out.append(entry)
        for sub in r.subresources:
            s: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                                 "namespaced": r.namespaced, "kind": r.kind,
                                 "verbs": ["get", "patch", "update"]}
            if sub == "scale":
                s.update(kind="Scale", group="autoscaling", version="v1")
            if sub == "log":
                s.update(verbs=["get"])
            out.append(s)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root() -> dict[str, Any]:
    paths = {}
    for g, vs in group_versions().items():
        for v in vs:
            p = _gv_path(g, v)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={_hash_gv(g, v)}"}
    return {"paths": paths}


def _hash_gv(group: str, version: str) -> str:
    return hashlib.sha256(f"{group}/{version}/1".encode()).hexdigest()[:32].upper()


def openapi_v3_gv(path: str) -> dict[str, Any] | None:
    """A minimal per-group-version document: every resource's PATCH operation with
    its GVK extension and the fieldValidation query parameter, which is what
    kubectl/helm look for to use server-side field validation."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    items = in_group_version(group, version)
    if not items:
        return None
    doc_paths: dict[str, Any] = {}
    for r in items:
        base = "/" + _gv_path(group, version)
        if r.namespaced:
            base += "/namespaces/{namespace}"
        gvk = {"group": group, "version": version, "kind": r.kind}
        params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        op = {"operationId": f"patch{r.kind}", "parameters": params,
              "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
              "responses": {"200": {"description": "OK"}}}
        if "patch" in r.verbs:
            doc_paths[f"{base}/{r.plural}/{{name}}"] = {"patch": op}
        else:
            doc_paths[f"{base}/{r.plural}"] = {"post": {**op, "x-kubernetes-action": "post"}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": doc_paths, "components": {"schemas": {}}}


__all__ = ["RESOURCES", "VERSION", "api_group", "api_group_list", "api_versions",
           "openapi_v3_gv", "openapi_v3_root", "resource_list"]

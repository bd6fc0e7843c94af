"""pods/log, deployments|replicasets/scale and SelfSubjectAccessReview."""

from __future__ import annotations

import copy
import json
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .auth import User, allowed
from .errors import bad_request, unsupported_media_type
from .patch import json_patch, merge_patch
from .selectors import selector_from_match

if TYPE_CHECKING:
    from .api import Api, Request
    from .server import Handler
    from .storage import Store


def access_review(store: Store, req: Request, user: User) -> dict[str, Any]:
    if req.method != "POST":
        from .errors import method_not_allowed
        raise method_not_allowed()
    from .api import decode

    body = decode(req) if req.body else {}
    spec = (body.get("spec") if isinstance(body, dict) else None) or {}
    ra = spec.get("resourceAttributes")
    if ra:
        resource = ra.get("resource", "")
        if ra.get("subresource"):
            resource += "/" + ra["subresource"]
        ok = allowed(store, user, ra.get("verb", ""), ra.get("group", ""), resource,
                     ra.get("namespace", ""), ra.get("name", ""))
    else:
        ok = not user.restricted
    status: dict[str, Any] = {"allowed": ok}
    if ok and not user.restricted:
        status["reason"] = "admin user of the stand-in"
    elif ok:
        status["reason"] = "RBAC: allowed by a role binding"
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}


def log_path(state_dir: Path, ns: str, pod: str, container: str) -> Path:
    return state_dir / "logs" / ns / pod / f"{container}.log"


def pod_log(h: Handler, api: Api, req: Request) -> None:
    if req.method != "GET":
        from .errors import method_not_allowed
        raise method_not_allowed()
    pod = api.get(req)
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    init = [c["name"] for c in (pod.get("spec") or {}).get("initContainers") or []]
    container = req.q("container")
    if not container:
        if len(containers) != 1:
            raise bad_request(f"a container name must be specified for pod {req.name}, "
                              f"choose one of: [{' '.join(containers)}]"
                              + (f" or one of the init containers: [{' '.join(init)}]"
                                 if init else ""))
        container = containers[0]
    if container not in containers + init:
        raise bad_request(f"container {container} is not valid for pod {req.name}")
    if req.q("previous") in ("true", "1"):
        raise bad_request(f'previous terminated container "{container}" in pod "{req.name}" '
                          "not found")
    state_dir = h.server.state_dir
    path = log_path(state_dir, req.namespace, req.name, container) if state_dir else None
    if path is None or not path.exists():
        raise bad_request(f'container "{container}" in pod "{req.name}" is waiting to start: '
                          "ContainerCreating")
    tail = req.q("tailLines")
    limit = int(req.q("limitBytes") or 0)
    with path.open("rb") as f:
        data = b"".join(deque(f, maxlen=max(0, int(tail)))) if tail else f.read()
        if limit:
            data = data[:limit]
        if req.q("follow") not in ("true", "1"):
            h._send(200, data, "text/plain")
            return
        h._start_stream("text/plain")
        if data and not h._chunk(data):
            return
        idle = 0.0
        while not h.server.stop_event.is_set() and not h._closed():
            more = f.read()
            if more:
                idle = 0.0
                if not h._chunk(more):
                    return
                continue
            cur = api.store.get(req.res.key, req.namespace, req.name)
            phase = ((cur or {}).get("status") or {}).get("phase")
            if cur is None or cur["metadata"]["uid"] != pod["metadata"]["uid"]:
                break
            if phase in ("Succeeded", "Failed"):
                idle += 0.2
                if idle > 1.0:
                    break
            time.sleep(0.2)
        h._end_stream()


def _to_scale(obj: dict[str, Any]) -> dict[str, Any]:
    md = obj["metadata"]
    sel = (obj.get("spec") or {}).get("selector")
    labels = ",".join(f"{k}={vs[0]}" if op == "=" else f"{k} {op} ({','.join(vs)})"
                      for k, op, vs in selector_from_match(sel))
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {
        "name": md["name"], "namespace": md.get("namespace"), "uid": md["uid"],
        "resourceVersion": md["resourceVersion"],
        "creationTimestamp": md["creationTimestamp"]},
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                   "selector": labels}}


def scale(api: Api, req: Request) -> dict[str, Any]:
    from .api import Request as Req
    obj = api.get(req)
    if req.method == "GET":
        return _to_scale(obj)
    current = _to_scale(obj)
    from .api import decode

    if req.method == "PUT":
        new = decode(req)
    elif req.method == "PATCH":
        ctype = req.content_type.split(";")[0]
        patch = decode(req)
        if ctype == "application/json-patch+json":
            new = json_patch(current, patch)
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            new = merge_patch(current, patch)
        else:
            raise unsupported_media_type(ctype)
    else:
        from .errors import method_not_allowed
        raise method_not_allowed()
    rv = (new.get("metadata") or {}).get("resourceVersion")
    replicas = (new.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int):
        raise bad_request("spec.replicas must be an integer")
    updated = copy.deepcopy(obj)
    updated["spec"]["replicas"] = replicas
    if rv:
        updated["metadata"]["resourceVersion"] = rv
    inner = Req("PUT", req.res, req.namespace, req.name, "", req.query,
                json.dumps(updated).encode(), "application/json", req.user_agent)
    return _to_scale(api.update(inner))

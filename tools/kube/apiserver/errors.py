"""Status bodies shaped exactly like a real kube-apiserver's errors."""

from __future__ import annotations

from typing import Any

from .resources import Resource


class ApiError(Exception):
    """An error answered as a metav1.Status body."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metadata = metadata or {}  # ListMeta of the Status (e.g. a fresh continue token)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": dict(self.metadata),
            "status": "Failure",
            "message": self.message, "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def qualified(res: Resource) -> str:
    """'pods', 'deployments.apps' - the group-qualified resource name."""
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _details(res: Resource, name: str | None, kind: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if name:
        d["name"] = name
    if res.group:
        d["group"] = res.group
    d["kind"] = kind or res.plural
    return d


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(res)} "{name}" not found', _details(res, name))


def namespace_not_found(ns: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                    {"name": ns, "kind": "namespaces"})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(res)} "{name}" already exists',
                    _details(res, name))


def conflict(res: Resource, name: str, why: str = "the object has been modified; please apply "
             "your changes to the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {qualified(res)} "{name}": {why}',
                    _details(res, name))


def invalid(res: Resource, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid; causes are {reason, message, field} dicts."""
    kind_q = f"{res.kind}.{res.group}" if res.group else res.kind
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name, **({"group": res.group} if res.group else {}), "kind": res.kind,
               "causes": causes}
    return ApiError(422, "Invalid", f'{kind_q} "{name}" is invalid: {text}', details)


def no_resource() -> ApiError:
    """404 for a path the server does not serve (an unknown group, version or resource)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str = "the server does not allow this method on the "
                       "requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def not_implemented(message: str) -> ApiError:
    return ApiError(501, "NotImplemented", message, {})


def gone(message: str, metadata: dict[str, Any] | None = None) -> ApiError:
    return ApiError(410, "Expired", message, metadata=metadata)


def unsupported_media_type(ctype: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    f"application/apply-patch+yaml ({ctype!r})")


def forbidden(res: Resource | None, resource: str, group: str, name: str, user: str, verb: str,
              namespace: str, subresource: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    what = f'{qual} "{name}"' if name else qual
    res_text = f"{resource}/{subresource}" if subresource else resource
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    msg = (f'{what} is forbidden: User "{user}" cannot {verb} resource "{res_text}" '
           f'in API group "{group}"{scope}')
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return ApiError(403, "Forbidden", msg, details)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")

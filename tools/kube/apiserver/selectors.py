"""Label and field selectors (the string syntax of ?labelSelector= / ?fieldSelector=)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Requirement = tuple[str, str, tuple[str, ...]]  # key, op, values
_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p for p in parts if p.strip()]


def parse_labels(selector: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split(selector or ""):
        m = _EQ_RE.match(part)
        if m:
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append((m.group(1), op, (m.group(3),)))
            continue
        m = _SET_RE.match(part)
        if m and not (m.group(1) and m.group(3)):
            if m.group(3):
                values = tuple(v.strip() for v in m.group(4).split(",") if v.strip())
                reqs.append((m.group(2), m.group(3), values))
            else:
                reqs.append((m.group(2), "!exists" if m.group(1) else "exists", ()))
            continue
        raise bad_request(f"unable to parse requirement: {part.strip()!r}: invalid label "
                          f"selector {selector!r}")
    return reqs


def match_labels(reqs: list[Requirement], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present = key in labels
        val = labels.get(key)
        if op == "=" and (not present or val != values[0]):
            return False
        if op == "!=" and present and val == values[0]:
            return False
        if op == "in" and (not present or val not in values):
            return False
        if op == "notin" and present and val in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def selector_from_match(sel: dict[str, Any] | None) -> list[Requirement]:
    """A metav1.LabelSelector object (matchLabels/matchExpressions) as requirements."""
    if not sel:
        return []
    reqs: list[Requirement] = [(k, "=", (v,)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for e in sel.get("matchExpressions") or []:
        reqs.append((e["key"], ops[e["operator"]], tuple(e.get("values") or ())))
    return reqs


def _field_value(obj: dict[str, Any], path: str) -> str | None:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return None if cur is None else str(cur)


FIELD_LABELS: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "status.phase", "status.podIP", "status.nominatedNodeName",
             "spec.hostNetwork"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"},
    "secrets": {"type"},
    "jobs": {"status.successful"},
    "namespaces": {"status.phase"},
    "nodes": {"spec.unschedulable"},
    "replicasets": {"status.replicas"},
}


def parse_fields(selector: str, plural: str) -> Callable[[dict[str, Any]], bool]:
    reqs: list[tuple[str, bool, str]] = []
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_LABELS.get(plural, set())
    for part in _split(selector or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid selector: {selector!r}; can't understand {part!r}")
        field = m.group(1)
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        reqs.append((field, m.group(2) == "!=", m.group(3)))

    def match(obj: dict[str, Any]) -> bool:
        for field, negate, value in reqs:
            if field == "source":
                actual = _field_value(obj, "source.component") or ""
            else:
                actual = _field_value(obj, field) or ""
            if (actual == value) == negate:
                return False
        return True

    return match

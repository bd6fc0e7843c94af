"""JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.

Strategic merge patch strategies come from the real OpenAPI definitions that
kubernetes-validate ships (x-kubernetes-patch-strategy / -merge-key)."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from .errors import ApiError, bad_request

# --------------------------------------------------------------------------- JSON patch


class PatchError(ValueError):
    pass


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [_unescape(t) for t in path[1:].split("/")]


def _walk(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for t in tokens:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"missing value at {'/'.join(tokens)!r}")
            cur = cur[t]
        elif isinstance(cur, list):
            try:
                cur = cur[int(t)]
            except (ValueError, IndexError) as exc:
                raise PatchError(f"invalid array index {t!r}") from exc
        else:
            raise PatchError(f"cannot traverse {t!r}")
    return cur


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            idx = int(last)
            if idx < 0 or idx > len(parent):
                raise PatchError(f"add operation does not apply: index {idx} out of bounds")
            parent.insert(idx, value)
    else:
        raise PatchError("add operation does not apply: parent is not a container")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"remove operation does not apply: doc is missing path: "
                             f"\"/{'/'.join(tokens)}\": missing value")
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError) as exc:
            raise PatchError(f"remove operation does not apply: index {last!r}") from exc
    raise PatchError("remove operation does not apply")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    try:
        for op in ops:
            kind = op.get("op")
            tokens = _pointer(op.get("path", ""))
            if kind == "add":
                doc = _add(doc, tokens, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                _remove(doc, tokens)
            elif kind == "replace":
                _walk(doc, tokens)  # must exist
                if tokens:
                    parent = _walk(doc, tokens[:-1])
                    if isinstance(parent, list):
                        parent[int(tokens[-1])] = copy.deepcopy(op.get("value"))
                    else:
                        parent[tokens[-1]] = copy.deepcopy(op.get("value"))
                else:
                    doc = copy.deepcopy(op.get("value"))
            elif kind in ("move", "copy"):
                src = _pointer(op.get("from", ""))
                value = _remove(doc, src) if kind == "move" else copy.deepcopy(_walk(doc, src))
                doc = _add(doc, tokens, value)
            elif kind == "test":
                if _walk(doc, tokens) != op.get("value"):
                    raise PatchError(f"testing value {op.get('path')} failed")
            else:
                raise PatchError(f"Unexpected kind: {kind}")
    except PatchError as exc:
        raise ApiError(422, "Invalid", str(exc)) from exc
    return doc


# --------------------------------------------------------------------------- merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# --------------------------------------------------------------------------- schema


_SCHEMA_DIR = "kubernetes-json-schema/v1.33.0-local-strict/_definitions.json"


@functools.cache
def _definitions() -> dict[str, Any]:
    try:
        import kubernetes_validate
    except ImportError:  # pragma: no cover - dev extra missing
        return {}
    path = Path(kubernetes_validate.__file__).parent / _SCHEMA_DIR
    data = json.loads(path.read_text())
    return data.get("$defs") or data.get("definitions") or {}


@functools.cache
def _kind_index() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for name, d in _definitions().items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            gv = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            out[(gv, gvk["kind"])] = name
    return out


def schema_for(api_version: str, kind: str) -> dict[str, Any] | None:
    name = _kind_index().get((api_version, kind))
    return _definitions().get(name) if name else None


def _resolve(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    seen = 0
    while schema is not None and "$ref" in schema and seen < 10:
        schema = _definitions().get(schema["$ref"].rsplit("/", 1)[-1])
        seen += 1
    if schema is not None and "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0])
    return schema


def _prop(schema: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    schema = _resolve(schema)
    if not schema:
        return None
    p = (schema.get("properties") or {}).get(key)
    return p


def _items(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if not schema:
        return None
    return _resolve(schema.get("items"))


# --------------------------------------------------------------------------- strategic merge


def strategic_merge(original: Any, patch: Any, schema: dict[str, Any] | None) -> Any:
    """Apply a strategic merge patch to original (both plain JSON values)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [x for x in result[field] if x not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = _prop(schema, key)
        if isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, _resolve(sub) if sub else None)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, sub)
        else:
            result[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _order(result[field], order, _merge_key(_prop(schema, field)))
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_key(sub: dict[str, Any] | None) -> str | None:
    if not sub:
        return None
    return sub.get("x-kubernetes-patch-merge-key")


def _strategy(sub: dict[str, Any] | None) -> str:
    if not sub:
        return ""
    return str(sub.get("x-kubernetes-patch-strategy", ""))


def _order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else json.dumps(x, sort_keys=True)

    wanted = [ident(o) for o in order]
    ranked = {w: i for i, w in enumerate(wanted)}
    head = sorted([x for x in items if ident(x) in ranked], key=lambda x: ranked[ident(x)])
    tail = [x for x in items if ident(x) not in ranked]
    return head + tail


def _merge_list(original: Any, patch: list[Any], sub: dict[str, Any] | None) -> list[Any]:
    strategy = _strategy(sub)
    if "merge" not in strategy.split(","):
        return [x for x in copy.deepcopy(patch)
                if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    original = copy.deepcopy(original) if isinstance(original, list) else []
    key = _merge_key(sub)
    item_schema = _items(sub)
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [x for x in copy.deepcopy(patch)
                if not (isinstance(x, dict) and "$patch" in x)]
    if key is None:  # list of primitives: union
        out = list(original)
        for x in patch:
            if x not in out:
                out.append(copy.deepcopy(x))
        return out
    for item in patch:
        if not isinstance(item, dict):
            continue
        ident = item.get(key)
        idx = next((i for i, o in enumerate(original)
                    if isinstance(o, dict) and o.get(key) == ident), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                original.pop(idx)
            continue
        if idx is None:
            original.append({k: v for k, v in copy.deepcopy(item).items()
                             if not k.startswith("$")})
        else:
            merged = strategic_merge(original[idx], item, item_schema)
            if merged is None:
                original.pop(idx)
            else:
                original[idx] = merged
    return original


def strategic_merge_for(obj: dict[str, Any], patch: Any) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise bad_request("strategic merge patch body must be a JSON object")
    schema = schema_for(obj.get("apiVersion", ""), obj.get("kind", ""))
    merged = strategic_merge(obj, patch, schema)
    if not isinstance(merged, dict):
        raise bad_request("strategic merge patch deleted the whole object")
    return merged

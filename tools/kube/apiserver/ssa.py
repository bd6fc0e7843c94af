"""Server-side apply and managedFields (simplified: ownership of leaf paths).

A path is a tuple of FieldsV1 elements ("f:spec", 'k:{"name":"app"}', "f:image").
Associative lists (x-kubernetes-list-type: map) are keyed like the real
apiserver; other lists are atomic leaves."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError
from .patch import _items, _prop, _resolve, schema_for

Path = tuple[str, ...]
Obj = dict[str, Any]

_META_MANAGED = ("labels", "annotations", "ownerReferences", "finalizers")
_TOP_IGNORED = ("apiVersion", "kind", "status")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _list_keys(schema: dict[str, Any] | None) -> list[str] | None:
    if not schema:
        return None
    if schema.get("x-kubernetes-list-type") == "map":
        return list(schema.get("x-kubernetes-list-map-keys") or [])
    if schema.get("x-kubernetes-list-type") in ("set", "atomic"):
        return None
    key = schema.get("x-kubernetes-patch-merge-key")
    return [key] if key and "merge" in str(schema.get("x-kubernetes-patch-strategy")) else None


def _is_set(schema: dict[str, Any] | None) -> bool:
    return bool(schema) and (schema or {}).get("x-kubernetes-list-type") == "set"


def _item_key(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item},
                             separators=(",", ":"), sort_keys=True)


def leaf_paths(obj: Obj) -> set[Path]:
    """Owned-field paths of an object (or apply configuration)."""
    schema = schema_for(obj.get("apiVersion", ""), obj.get("kind", ""))
    out: set[Path] = set()
    for key, value in obj.items():
        if key in _TOP_IGNORED:
            continue
        if key == "metadata":
            md = value or {}
            for mk in _META_MANAGED:
                if mk in md:
                    _walk(md[mk], ("f:metadata", f"f:{mk}"),
                          _resolve(_prop(_prop(schema, "metadata"), mk)), out)
            continue
        _walk(value, (f"f:{key}",), _prop(schema, key), out)
    return out


def _walk(value: Any, path: Path, schema: dict[str, Any] | None, out: set[Path]) -> None:
    schema = _resolve(schema) if schema else None
    if isinstance(value, dict) and value:
        for k, v in value.items():
            sub = _prop(schema, k) if schema else None
            if sub is None and schema and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            _walk(v, (*path, f"f:{k}"), sub, out)
        return
    if isinstance(value, list) and value:
        keys = _list_keys(schema)
        if keys and all(isinstance(i, dict) for i in value):
            item_schema = _items(schema)
            for item in value:
                ipath = (*path, _item_key(item, keys))
                out.add((*ipath, "."))
                for k, v in item.items():
                    _walk(v, (*ipath, f"f:{k}"), _prop(item_schema, k), out)
            return
        if _is_set(schema) or path[-1] == "f:finalizers":
            for item in value:
                out.add((*path, "v:" + json.dumps(item, separators=(",", ":"))))
            return
    out.add(path)


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        node = root
        for el in p:
            node = node.setdefault(el, {})
    return root


def from_fields_v1(fields: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in (fields or {}).items():
        p = (*prefix, k)
        if v:
            out |= from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def path_text(path: Path) -> str:
    out = ""
    for el in path:
        if el == ".":
            continue
        if el.startswith("f:"):
            out += "." + el[2:]
        elif el.startswith("k:"):
            keys = json.loads(el[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in keys.items()) + "]"
        elif el.startswith("v:"):
            out += f"[={el[2:]}]"
    return out


def _get(obj: Any, path: Path) -> Any:
    cur = obj
    for el in path:
        if el == ".":
            return cur
        if el.startswith("f:"):
            if not isinstance(cur, dict) or el[2:] not in cur:
                return _MISSING
            cur = cur[el[2:]]
        elif el.startswith("k:"):
            keys = json.loads(el[2:])
            if not isinstance(cur, list):
                return _MISSING
            cur = next((i for i in cur if isinstance(i, dict)
                        and all(i.get(k) == v for k, v in keys.items())), _MISSING)
            if cur is _MISSING:
                return cur
        elif el.startswith("v:"):
            val = json.loads(el[2:])
            return val if isinstance(cur, list) and val in cur else _MISSING
    return cur


_MISSING = object()


def _remove(obj: Any, path: Path) -> None:
    if not path:
        return
    parent_path, last = path[:-1], path[-1]
    if last == ".":  # remove a whole list item
        parent_path, last = path[:-2], path[-2]
    parent = _get(obj, parent_path)
    if parent is _MISSING:
        return
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        keys = json.loads(last[2:])
        parent[:] = [i for i in parent if not (isinstance(i, dict) and
                                                all(i.get(k) == v for k, v in keys.items()))]
    elif last.startswith("v:") and isinstance(parent, list):
        val = json.loads(last[2:])
        parent[:] = [i for i in parent if i != val]


def _prune(obj: Any, path: Path) -> None:
    """Drop maps/lists left empty by a removal, walking up from path's parent."""
    for n in range(len(path) - 1, 0, -1):
        parent_path = path[:n - 1]
        last = path[n - 1]
        if not last.startswith("f:"):
            continue
        parent = _get(obj, parent_path)
        if not isinstance(parent, dict):
            return
        value = parent.get(last[2:], _MISSING)
        if value in ({}, []):
            parent.pop(last[2:])
        else:
            return


def apply_merge(current: Any, config: Any, schema: dict[str, Any] | None) -> Any:
    """Merge an apply configuration into current (associative lists by key)."""
    schema = _resolve(schema) if schema else None
    if isinstance(config, dict) and isinstance(current, dict):
        out = copy.deepcopy(current)
        for k, v in config.items():
            sub = _prop(schema, k) if schema else None
            if sub is None and schema and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            out[k] = apply_merge(current.get(k), v, sub) if k in current else copy.deepcopy(v)
        return out
    if isinstance(config, list) and isinstance(current, list):
        keys = _list_keys(schema)
        if keys and all(isinstance(i, dict) for i in config + current):
            item_schema = _items(schema)
            out_list = copy.deepcopy(current)
            for item in config:
                ident = _item_key(item, keys)
                idx = next((n for n, c in enumerate(out_list) if _item_key(c, keys) == ident),
                           None)
                if idx is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[idx] = apply_merge(out_list[idx], item, item_schema)
            return out_list
        if _is_set(schema):
            return current + [copy.deepcopy(i) for i in config if i not in current]
    return copy.deepcopy(config)


def managers(obj: Obj) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _set_entry(entries: list[dict[str, Any]], manager: str, operation: str, api_version: str,
               paths: set[Path], subresource: str = "") -> list[dict[str, Any]]:
    def mine(e: dict[str, Any]) -> bool:
        return (e.get("manager") == manager and e.get("operation") == operation
                and e.get("subresource", "") == subresource)

    fields = to_fields_v1(paths) if paths else None
    same = [e for e in entries if mine(e) and e.get("apiVersion") == api_version
            and e.get("fieldsV1") == fields]
    if same:  # unchanged ownership: keep the entry where it is (a no-op apply writes nothing)
        return [e for e in entries if not mine(e) or e is same[0]]
    out = [e for e in entries if not mine(e)]
    if paths:
        entry: dict[str, Any] = {"manager": manager, "operation": operation,
                                 "apiVersion": api_version, "time": now(),
                                 "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
        if subresource:
            entry["subresource"] = subresource
        out.append(entry)
    return out


def _strip(entries: list[dict[str, Any]], taken: set[Path], keep: dict[str, Any] | None = None
           ) -> list[dict[str, Any]]:
    out = []
    for e in entries:
        if e is keep:
            out.append(e)
            continue
        owned = from_fields_v1(e.get("fieldsV1") or {})
        rest = owned - taken
        if rest == owned:
            out.append(e)
        elif rest:
            out.append({**e, "fieldsV1": to_fields_v1(rest)})
    return out


def record_update(old: Obj | None, new: Obj, manager: str, subresource: str = "") -> None:
    """An Update-operation writer takes ownership of the fields it changed."""
    new_paths = leaf_paths(new) if not subresource else _status_paths(new)
    old_paths = (leaf_paths(old) if not subresource else _status_paths(old)) if old else set()
    changed = {p for p in new_paths if p not in old_paths or _get(new, p) != _get(old, p)}
    entries = managers(old) if old else []
    if not changed and old is not None:
        new["metadata"]["managedFields"] = entries
        return
    entries = _strip(entries, changed)
    mine = next((e for e in entries if e.get("manager") == manager and
                 e.get("operation") == "Update" and e.get("subresource", "") == subresource),
                None)
    paths = changed | (from_fields_v1(mine.get("fieldsV1") or {}) if mine else set())
    paths = {p for p in paths if _get(new, p) is not _MISSING}
    new["metadata"]["managedFields"] = _set_entry(entries, manager, "Update",
                                                  new.get("apiVersion", ""), paths, subresource)


def _status_paths(obj: Obj) -> set[Path]:
    out: set[Path] = set()
    if "status" in obj:
        _walk(obj["status"], ("f:status",), None, out)
    return out


def server_side_apply(current: Obj | None, config: Obj, manager: str, force: bool,
                      subresource: str = "") -> Obj:
    """Return the new object (without server-set metadata) or raise a 409 conflict."""
    api_version = config.get("apiVersion", "")
    schema = schema_for(api_version, config.get("kind", ""))
    if subresource == "status":
        new_paths = _status_paths(config)
    else:
        config = {k: v for k, v in config.items() if k != "status"}
        new_paths = leaf_paths(config)
    entries = managers(current) if current else []
    conflicts: dict[str, list[Path]] = {}
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Apply":
            continue
        if e.get("subresource", "") != subresource:
            continue
        owned = from_fields_v1(e.get("fieldsV1") or {})
        for p in new_paths & owned:
            if p[-1] == "." or (current is not None and _get(current, p) == _get(config, p)):
                continue
            conflicts.setdefault(f'{e["manager"]}\x00{e.get("apiVersion", api_version)}',
                                 []).append(p)
    if conflicts and not force:
        raise _conflict_error(conflicts)
    base = copy.deepcopy(current) if current else {}
    mine = next((e for e in entries if e.get("manager") == manager and
                 e.get("operation") == "Apply" and e.get("subresource", "") == subresource), None)
    if mine and current:
        previously = from_fields_v1(mine.get("fieldsV1") or {})
        others: set[Path] = set()
        for e in entries:
            if e is not mine:
                others |= from_fields_v1(e.get("fieldsV1") or {})
        gone = previously - new_paths - others
        for p in sorted(gone, key=lambda p: (p[-1] != ".", -len(p))):
            _remove(base, p)
        for p in gone:
            _prune(base, p)
    merged = apply_merge(base, config, schema) if base else copy.deepcopy(config)
    taken = {p for ps in conflicts.values() for p in ps} if force else set()
    entries = _strip(entries, taken)
    merged.setdefault("metadata", {})["managedFields"] = _set_entry(
        entries, manager, "Apply", api_version, new_paths, subresource)
    return merged


def _conflict_error(conflicts: dict[str, list[Path]]) -> ApiError:
    causes = []
    lines = []
    total = sum(len(v) for v in conflicts.values())
    for who, paths in conflicts.items():
        mgr, _, gv = who.partition("\x00")
        for p in sorted(paths):
            causes.append({"reason": "FieldManagerConflict",
                           "message": f'conflict with "{mgr}" using {gv}',
                           "field": path_text(p)})
    if len(conflicts) == 1 and total == 1:
        c = causes[0]
        msg = f"Apply failed with 1 conflict: {c['message']}: {c['field']}"
    else:
        for who, paths in conflicts.items():
            mgr, _, gv = who.partition("\x00")
            word = "conflict" if len(paths) == 1 else "conflicts"
            lines.append(f'{word} with "{mgr}" using {gv}:\n' +
                         "\n".join(f"- {path_text(p)}" for p in sorted(paths)))
        msg = f"Apply failed with {total} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", msg, {"causes": causes})

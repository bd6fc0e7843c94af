"""Chunked LIST (`limit` / `continue`) the way kube-apiserver's etcd3 store answers it.

A page that leaves items behind carries `metadata.continue`: an opaque token (URL-safe
base64 of `{"v": "meta.k8s.io/v1", "rv": N, "start": "<ns>/<name>\\x00"}`, as the real
`storage.EncodeContinue` writes) and, when no selector narrowed the list,
`metadata.remainingItemCount`. Every page of one list is read at the resourceVersion of
the first page (etcd's MVCC snapshot): objects created or deleted meanwhile neither appear
nor vanish. Here the snapshot is the copy taken for the first page, kept until
"compaction" (`Snapshots.ttl`, five minutes like the apiserver's etcd compaction interval,
or `Snapshots.compact()`); a token whose snapshot is gone answers 410 Gone, reason Expired,
with the real message and, in the Status's metadata, a token that goes on at the latest
state (rv -1). A token that does not decode answers 400 BadRequest; a negative
rv in a token (the real server's "inconsistent continue") continues on the latest state.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import bad_request, gone

Obj = dict[str, Any]
Key = tuple[str, ...]  # (group, plural, namespace or "")

CONTINUE_VERSION = "meta.k8s.io/v1"
EXPIRED = ("The provided continue parameter is too old to display a consistent list result. "
           "You can start a new list without the continue parameter, or use the continue "
           "token in this response to retrieve the remainder of the results. Continuing with "
           "the provided token results in an inconsistent list - objects that were created, "
           "modified, or deleted between the time the first chunk was returned and now may "
           "show up in the list.")


def encode_continue(rv: int, start: str) -> str:
    data = json.dumps({"v": CONTINUE_VERSION, "rv": rv, "start": start},
                      separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """(resourceVersion, start key) of a token; 400 like the real server when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        version, rv, start = data["v"], int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise bad_request(f"invalid continue token: continue key is not valid: {exc}") from exc
    if version != CONTINUE_VERSION:
        raise bad_request("invalid continue token: continue key is not valid: incorrect "
                          f"encoded start resourceVersion (version {CONTINUE_VERSION})")
    if rv == 0:
        raise bad_request("invalid continue token: continue key is not valid: incorrect "
                          "encoded start resourceVersion (version meta.k8s.io/v1)")
    if not start or ".." in start.split("/") or start.startswith("/"):
        raise bad_request("invalid continue token: continue key is not valid: "
                          f"{start!r} is not a valid key")
    return rv, start


def item_key(obj: Obj) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md['name']}"


class Snapshots:
    """Full lists of a resource at the resourceVersion of a paginated list's first page."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 32) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._lists: OrderedDict[tuple[Key, int], tuple[float, list[Obj]]] = OrderedDict()

    def put(self, key: Key, rv: int, items: list[Obj]) -> None:
        with self._lock:
            self._lists[(key, rv)] = (time.monotonic(), items)
            self._lists.move_to_end((key, rv))
            while len(self._lists) > self.max_entries:  # the oldest are "compacted" first
                self._lists.popitem(last=False)

    def get(self, key: Key, rv: int) -> list[Obj] | None:
        with self._lock:
            entry = self._lists.get((key, rv))
            if entry is None:
                return None
            if time.monotonic() - entry[0] > self.ttl:
                del self._lists[(key, rv)]
                return None
            return entry[1]

    def compact(self) -> None:
        """Forget every snapshot: each outstanding continue token now answers 410 Expired."""
        with self._lock:
            self._lists.clear()


def page(load: Callable[[], tuple[list[Obj], int]], *, key: Key, snapshots: Snapshots,
         limit: str, token: str, resource_version: str, keep: Callable[[Obj], bool],
         selected: bool) -> tuple[list[Obj], dict[str, Any]]:
    """The items of one page (copies the caller may change) and the list's metadata.

    `load`: the whole resource (copies) and the current resourceVersion, read for a first
    page only; `keep`: the request's namespace and selectors; `selected`: a selector was
    given (the real server then leaves remainingItemCount out).
    """
    try:
        size = int(limit or 0)
    except ValueError as exc:
        raise bad_request(f"limit: Invalid value: {limit!r}: must be an integer") from exc
    start, rv = "", 0
    if token:
        if resource_version not in ("", "0"):
            raise bad_request("specifying resource version is not allowed when using continue")
        rv, start = decode_continue(token)
    loaded = rv <= 0
    if not loaded:
        found = snapshots.get(key, rv)
        if found is None:  # with a token to go on at the latest state, as the real server
            raise gone(EXPIRED, {"continue": encode_continue(-1, start)})
        items = found
    else:  # a first page, or a negative rv: continue on the latest state (inconsistent)
        items, rv = load()
        items.sort(key=item_key)  # etcd's order: the bytes of the key
    first = bisect.bisect_left(items, start, key=item_key) if start else 0
    if size <= 0:
        return [o for o in items[first:] if keep(o)], {"resourceVersion": str(rv)}
    chosen: list[Obj] = []
    examined = first
    while examined < len(items) and len(chosen) < size:
        if keep(items[examined]):
            chosen.append(items[examined])
        examined += 1
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if examined < len(items):
        if loaded:
            snapshots.put(key, rv, items)
        meta["continue"] = encode_continue(rv, item_key(items[examined - 1]) + "\x00")
        if not selected:
            meta["remainingItemCount"] = len(items) - examined
    if token or "continue" in meta:  # the snapshot serves other pages: hand out copies
        chosen = json.loads(json.dumps(chosen))
    return chosen, meta

"""?watch=1 streams: ADDED/MODIFIED/DELETED (+ BOOKMARK, ERROR 410 Expired)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import gone
from .selectors import match_labels, parse_fields, parse_labels

if TYPE_CHECKING:
    import threading

    from .api import Request
    from .storage import Store

Obj = dict[str, Any]
Send = Callable[[Obj], bool]


def run_watch(store: Store, req: Request, send: Send, closed: Callable[[], bool],
              stop: threading.Event, wrap: Callable[[Obj], Obj] | None = None) -> None:
    res = req.res
    labels = parse_labels(req.q("labelSelector"))
    fields = parse_fields(req.q("fieldSelector"), res.plural)
    ns = req.namespace if res.namespaced and req.namespace else None
    timeout = float(req.q("timeoutSeconds") or 0)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    bookmarks = req.q("allowWatchBookmarks") in ("true", "1")
    initial = req.q("sendInitialEvents") == "true"
    rv_s = req.q("resourceVersion")

    def matches(o: Obj | None) -> bool:
        if o is None:
            return False
        md = o.get("metadata") or {}
        if ns is not None and md.get("namespace") != ns:
            return False
        if req.name and md.get("name") != req.name:
            return False
        return match_labels(labels, md.get("labels")) and fields(o)

    def emit(etype: str, obj: Obj) -> bool:
        return send({"type": etype, "object": wrap(obj) if wrap else obj})

    def bookmark(rv: int, end_initial: bool = False) -> bool:
        md: Obj = {"resourceVersion": str(rv)}
        if end_initial:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return send({"type": "BOOKMARK", "object": {
            "kind": res.kind, "apiVersion": res.group_version, "metadata": md}})

    pending: list[tuple[str, Obj]] = []
    with store.lock:
        if rv_s in ("", "0") or initial:
            items, last = store.list(res.key, ns)
            pending = [("ADDED", o) for o in items if matches(o)]
        else:
            try:
                last = int(rv_s)
            except ValueError:
                send({"type": "ERROR", "object": gone(
                    f"invalid resource version {rv_s!r}").status()})
                return
            if last < store.oldest_rv:
                err = gone(f"too old resource version: {last} ({store.oldest_rv})")
                send({"type": "ERROR", "object": err.status()})
                return
    for etype, obj in pending:
        if not emit(etype, obj):
            return
    if initial and bookmarks and not bookmark(last, end_initial=True):
        return
    last_bookmark = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
        with store.cond:
            events = store.events_after(last)
            if not events:
                store.cond.wait(wait)
                events = store.events_after(last)
            too_old = last < store.oldest_rv
        if too_old:
            err = gone(f"too old resource version: {last} ({store.oldest_rv})")
            send({"type": "ERROR", "object": err.status()})
            return
        for ev in events:
            last = ev.seq
            if ev.key != res.key:
                continue
            if ev.type == "MODIFIED":
                new_m, old_m = matches(ev.obj), matches(ev.old) if ev.old else matches(ev.obj)
                etype = "MODIFIED" if new_m and old_m else "ADDED" if new_m else \
                    "DELETED" if old_m else ""
            else:
                etype = ev.type if matches(ev.obj) else ""
            if etype and not emit(etype, ev.obj):
                return
        if closed():
            return
        if bookmarks and time.monotonic() - last_bookmark > 5:
            last_bookmark = time.monotonic()
            if not bookmark(last):
                return

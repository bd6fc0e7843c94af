"""In-memory object store with a global resourceVersion, a watch history and
optional persistence to STATE_DIR/state.json."""

from __future__ import annotations

import builtins
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (group, plural)


def _copy(o: Any) -> Any:
    """Deep copy of JSON data (several times faster than copy.deepcopy)."""
    return json.loads(json.dumps(o))
Obj = dict[str, Any]


@dataclass
class Event:
    seq: int  # == the resourceVersion written by this change
    type: str  # ADDED | MODIFIED | DELETED
    key: Key
    obj: Obj
    old: Obj | None = None  # the object before a MODIFIED change


class Store:
    def __init__(self, state_file: Path | None = None, history: int = 5000) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.objects: dict[Key, dict[tuple[str, str], Obj]] = {}
        self.rv = 1
        self.history: list[Event] = []
        self.history_max = history
        self.oldest_rv = 1  # watches from an RV below this get 410 Gone
        self.state_file = state_file
        self._dirty = False
        self._stop = threading.Event()
        if state_file is not None and state_file.exists():
            self._load(state_file)
        self._flusher: threading.Thread | None = None
        if state_file is not None:
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name="kube-store-flush")
            self._flusher.start()

    # ---- persistence -------------------------------------------------
    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.rv = int(data.get("rv", 1))
        self.oldest_rv = self.rv
        for key_s, objs in data.get("objects", {}).items():
            group, _, plural = key_s.rpartition("/")
            bucket = self.objects.setdefault((group, plural), {})
            for o in objs:
                md = o["metadata"]
                bucket[(md.get("namespace", ""), md["name"])] = o
        log.info("loaded %s objects from %s (rv %s)",
                 sum(len(b) for b in self.objects.values()), path, self.rv)

    def _snapshot(self) -> str:
        with self.lock:
            data = {"rv": self.rv, "objects": {
                f"{g}/{p}": list(b.values()) for (g, p), b in self.objects.items() if b}}
            return json.dumps(data)

    def flush(self) -> None:
        if self.state_file is None:
            return
        text = self._snapshot()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.state_file)

    def _flush_loop(self) -> None:
        while not self._stop.wait(1.0):  # at most once a second
            with self.lock:
                dirty, self._dirty = self._dirty, False
            if dirty:
                try:
                    self.flush()
                except OSError as exc:  # pragma: no cover - disk trouble
                    log.warning("could not persist state: %s", exc)

    def close(self) -> None:
        self._stop.set()
        with self.cond:
            self.cond.notify_all()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        self.flush()

    # ---- reads ---------------------------------------------------------
    def get(self, key: Key, ns: str, name: str) -> Obj | None:
        with self.lock:
            o = self.objects.get(key, {}).get((ns, name))
            return _copy(o) if o is not None else None

    def list(self, key: Key, ns: str | None = None) -> tuple[list[Obj], int]:
        """Objects (deep copies) sorted by namespace/name, and the current rv."""
        with self.lock:
            bucket = self.objects.get(key, {})
            items = [_copy(o) for (ons, _), o in sorted(bucket.items())
                     if ns is None or ons == ns]
            return items, self.rv

    def iter_all(self) -> Iterator[tuple[Key, Obj]]:
        with self.lock:
            snapshot = [(k, o) for k, b in self.objects.items() for o in b.values()]
        for k, o in snapshot:
            yield k, _copy(o)

    def owned_by(self, uid: str) -> builtins.list[tuple[Key, Obj]]:
        """Objects with an ownerReference to uid (copies)."""
        with self.lock:
            return [(k, _copy(o)) for k, b in self.objects.items() for o in b.values()
                    if any(r.get("uid") == uid
                           for r in o["metadata"].get("ownerReferences") or ())]

    def has_namespaced(self, ns: str) -> bool:
        with self.lock:
            return any(ons == ns for b in self.objects.values() for (ons, _) in b)

    # ---- writes (caller holds no lock; each call is atomic) ------------
    def _record(self, etype: str, key: Key, obj: Obj, old: Obj | None = None) -> None:
        self.history.append(Event(self.rv, etype, key, _copy(obj), old))
        if len(self.history) > self.history_max:
            drop = len(self.history) - self.history_max
            self.oldest_rv = self.history[drop - 1].seq
            del self.history[:drop]
        self._dirty = True
        self.cond.notify_all()

    def next_rv(self) -> str:
        with self.lock:
            self.rv += 1
            return str(self.rv)

    def put(self, key: Key, obj: Obj, etype: str) -> Obj:
        """Store obj with a fresh resourceVersion; etype ADDED or MODIFIED."""
        with self.lock:
            self.rv += 1
            md = obj["metadata"]
            md["resourceVersion"] = str(self.rv)
            bucket = self.objects.setdefault(key, {})
            ident = (md.get("namespace", ""), md["name"])
            old = bucket.get(ident)
            bucket[ident] = obj
            self._record(etype, key, obj, old)
            return _copy(obj)

    def remove(self, key: Key, ns: str, name: str) -> Obj | None:
        with self.lock:
            obj = self.objects.get(key, {}).pop((ns, name), None)
            if obj is None:
                return None
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._record("DELETED", key, obj)
            return _copy(obj)

    # ---- watch -----------------------------------------------------------
    def events_after(self, rv: int) -> builtins.list[Event]:
        """Events with seq > rv (caller holds the lock)."""
        hist = self.history
        lo, hi = 0, len(hist)
        while lo < hi:
            mid = (lo + hi) // 2
            if hist[mid].seq <= rv:
                lo = mid + 1
            else:
                hi = mid
        return hist[lo:]

"""`apiserver_request_total` at /metrics, as kube-apiserver counts requests.

Tests read it to see what clients really sent (e.g. how many LIST pages a listing took)
without wrapping the client under test. Labels follow the real metric: verb (LIST for a
collection GET, WATCH, APPLY for server-side apply, else the HTTP method), group, version,
resource, subresource, scope and code.
"""

from __future__ import annotations

import threading
from collections import Counter

LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "code")


def metric_verb(method: str, name: str, watch: bool, content_type: str) -> str:
    if method == "GET":
        return "WATCH" if watch else ("GET" if name else "LIST")
    if method == "PATCH" and content_type.startswith("application/apply-patch"):
        return "APPLY"
    return method


class RequestMetrics:
    """Thread-safe request counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, ...]] = Counter()

    def count(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._counts[labels] += 1

    def render(self) -> bytes:
        lines = ["# HELP apiserver_request_total Counter of apiserver requests broken out for "
                 "each verb, dry run value, group, version, resource, scope, component, and "
                 "HTTP response code.", "# TYPE apiserver_request_total counter"]
        with self._lock:
            items = sorted(self._counts.items())
        for labels, value in items:
            text = ",".join(f'{k}="{v}"' for k, v in zip(LABELS, labels, strict=True))
            lines.append(f"apiserver_request_total{{component=\"apiserver\",{text}}} {value}")
        return ("\n".join(lines) + "\n").encode()

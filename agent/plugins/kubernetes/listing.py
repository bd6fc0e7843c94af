"""Paginated LIST: every collection the agent reads arrives in pages of `list_page_size`.

An environment with 10,000 deployments must not come back as one response the agent
decodes (and the API server assembles) at once. The API server pages a list with
`limit` and an opaque `continue` token, reading every page at the first page's
resourceVersion, so the pages add up to one consistent list. When the token has expired
(410 Gone, reason Expired: etcd compacted that revision), the list starts over from the
first page, like client-go's pager, a bounded number of times.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError

if TYPE_CHECKING:
    from agent.plugins.kubernetes.client import KubeClient

RESTARTS = 2  # fresh starts after an expired continue token before giving up


def pages(client: KubeClient, path: str, *, page_size: int,
          label_selector: str | None = None,
          field_selector: str | None = None) -> Iterator[list[dict[str, Any]]]:
    """The items of a collection, one page (at most `page_size` items) at a time."""
    token: str | None = None
    while True:
        data = client.request("GET", path, query={
            "labelSelector": label_selector, "fieldSelector": field_selector,
            "limit": page_size, "continue": token}, verb="list")
        yield list(data.get("items") or [])
        token = (data.get("metadata") or {}).get("continue") or None
        if token is None:
            return


def list_all(client: KubeClient, api_version: str, kind: str, namespace: str | None = None,
             *, page_size: int, label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
    """Every object of a kind matching the selectors, read page by page."""
    path = client.path(api_version, kind, namespace=namespace)
    for attempt in range(RESTARTS + 1):
        items: list[dict[str, Any]] = []
        try:
            for page in pages(client, path, page_size=page_size,
                              label_selector=label_selector, field_selector=field_selector):
                items.extend(page)
        except AgentError as exc:
            if exc.status != 410 or attempt == RESTARTS:
                raise
            continue  # the snapshot behind the token is gone: read a fresh one
        for item in items:  # LIST items carry no apiVersion/kind; restore them
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items
    raise AssertionError("unreachable")  # pragma: no cover

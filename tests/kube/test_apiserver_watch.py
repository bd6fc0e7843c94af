"""Watch semantics: events after a resourceVersion, selectors, timeouts, 410 Gone."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
from kubernetes import client, watch

from tests.fixtures.kube import KubeAPI, start_kube_api


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name,
                                                                  "labels": labels}}


def stream(url: str, **params: Any) -> list[dict[str, Any]]:
    with requests.get(url, params={"watch": "1", **params}, stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/json"
        return [json.loads(line) for line in r.iter_lines() if line]


def test_watch_from_resource_version(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    first = v1.create_namespaced_config_map("default", cm("a"))
    events: list[tuple[str, str]] = []

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, "default", timeout_seconds=2,
                           resource_version=first.metadata.resource_version):
            events.append((ev["type"], ev["object"].metadata.name))

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    v1.create_namespaced_config_map("default", cm("b"))
    v1.patch_namespaced_config_map("a", "default", {"data": {"x": "y"}})
    v1.delete_namespaced_config_map("b", "default")
    t.join(10)
    assert events == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_watch_without_rv_lists_first_and_honours_timeout(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespaced_config_map("default", cm("a"))
    started = time.monotonic()
    events = stream(f"{kube_api.url}/api/v1/namespaces/default/configmaps", timeoutSeconds=1)
    assert 0.9 < time.monotonic() - started < 3
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_watch_label_selector_transitions(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    obj = v1.create_namespaced_config_map("default", cm("a", sel="no"))
    url = f"{kube_api.url}/api/v1/namespaces/default/configmaps"
    result: list[dict[str, Any]] = []
    t = threading.Thread(target=lambda: result.extend(stream(
        url, resourceVersion=obj.metadata.resource_version, labelSelector="sel=yes",
        timeoutSeconds=2)))
    t.start()
    time.sleep(0.3)
    v1.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"sel": "yes"}}})
    v1.patch_namespaced_config_map("a", "default", {"data": {"k": "v"}})
    v1.patch_namespaced_config_map("a", "default", {"metadata": {"labels": {"sel": "no"}}})
    t.join(10)
    assert [e["type"] for e in result] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_field_selector_on_name_and_bookmarks(kube_api: KubeAPI) -> None:
    v1 = client.CoreV1Api(kube_api.client())
    v1.create_namespaced_config_map("default", cm("a"))
    v1.create_namespaced_config_map("default", cm("b"))
    events = stream(f"{kube_api.url}/api/v1/namespaces/default/configmaps",
                    fieldSelector="metadata.name=b", timeoutSeconds=1,
                    sendInitialEvents="true", allowWatchBookmarks="true",
                    resourceVersionMatch="NotOlderThan")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events[:1]] == [("ADDED", "b")]
    bookmark = events[1]
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_too_old_resource_version_is_410(tmp_path: Any) -> None:
    api = start_kube_api(tmp_path / "k", history=5)
    try:
        v1 = client.CoreV1Api(api.client())
        for i in range(10):
            v1.create_namespaced_config_map("default", cm(f"c{i}"))
        events = stream(f"{api.url}/api/v1/namespaces/default/configmaps", resourceVersion="2")
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert status["code"] == 410 and status["reason"] == "Expired"
        assert status["message"].startswith("too old resource version: 2 (")
    finally:
        api.server.shutdown_all()

"""Chunked LIST on the stand-in behaves like kube-apiserver's (limit, continue, 410 Expired).

Real-server behaviour checked here: pages of at most `limit` items; an opaque continue
token; every page read at the first page's resourceVersion (objects created or deleted
meanwhile neither appear nor vanish); `remainingItemCount` only without selectors; a
compacted token answers 410 Expired, a forged one 400; `resourceVersion` together with
`continue` is refused; kubectl's `--chunk-size` pages through it.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import requests

from tests.fixtures.kube import KubeAPI, require_binary


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def _fill(api: KubeAPI, ns: str, count: int) -> None:
    url = f"{api.url}/api/v1/namespaces/{ns}/configmaps"
    with requests.Session() as session:
        for n in range(count):
            labels = {"parity": "even" if n % 2 == 0 else "odd"}
            assert session.post(url, json=_cm(f"cm-{n:03d}", **labels), timeout=10).ok


def _get(api: KubeAPI, ns: str, **query: Any) -> requests.Response:
    return requests.get(f"{api.url}/api/v1/namespaces/{ns}/configmaps", params=query,
                        timeout=10)


def test_pages_add_up_to_one_consistent_list(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace()
    _fill(kube_api, ns, 25)
    first = _get(kube_api, ns, limit=10).json()
    meta = first["metadata"]
    assert len(first["items"]) == 10 and meta["remainingItemCount"] == 15
    token, rv = meta["continue"], meta["resourceVersion"]
    assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["rv"] == int(rv)
    # changes after the first page do not show up in the later pages
    requests.delete(f"{kube_api.url}/api/v1/namespaces/{ns}/configmaps/cm-020", timeout=10)
    requests.post(f"{kube_api.url}/api/v1/namespaces/{ns}/configmaps", json=_cm("cm-999"),
                  timeout=10)
    names = [i["metadata"]["name"] for i in first["items"]]
    pages = 1
    while token:
        page = _get(kube_api, ns, limit=10, **{"continue": token}).json()
        assert page["metadata"]["resourceVersion"] == rv
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
        pages += 1
    assert pages == 3
    assert names == [f"cm-{n:03d}" for n in range(25)]  # cm-020 still there, cm-999 not yet
    fresh = [i["metadata"]["name"] for i in _get(kube_api, ns).json()["items"]]
    assert "cm-999" in fresh and "cm-020" not in fresh and "continue" not in fresh


def test_selected_pages_leave_out_the_remaining_count(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace()
    _fill(kube_api, ns, 9)
    page = _get(kube_api, ns, limit=2, labelSelector="parity=even").json()
    assert [i["metadata"]["name"] for i in page["items"]] == ["cm-000", "cm-002"]
    assert "continue" in page["metadata"] and "remainingItemCount" not in page["metadata"]
    rest = _get(kube_api, ns, limit=10, labelSelector="parity=even",
                **{"continue": page["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["cm-004", "cm-006", "cm-008"]
    assert "continue" not in rest["metadata"]


def test_compacted_token_is_expired_and_a_forged_one_is_refused(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace()
    _fill(kube_api, ns, 4)
    token = _get(kube_api, ns, limit=1).json()["metadata"]["continue"]
    both = _get(kube_api, ns, limit=1, resourceVersion="1", **{"continue": token})
    assert both.status_code == 400
    assert "resource version is not allowed when using continue" in both.json()["message"]
    assert _get(kube_api, ns, limit=1, resourceVersion="0", **{"continue": token}).ok
    kube_api.server.api.snapshots.compact()  # what etcd compaction does to old revisions
    expired = _get(kube_api, ns, limit=1, **{"continue": token})
    assert expired.status_code == 410
    body = expired.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Expired", 410)
    assert body["message"].startswith("The provided continue parameter is too old")
    rest = _get(kube_api, ns, limit=10, **{"continue": body["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in rest["items"]] == ["cm-001", "cm-002", "cm-003"]
    forged = _get(kube_api, ns, limit=1, **{"continue": "not-a-token"})
    assert forged.status_code == 400 and forged.json()["reason"] == "BadRequest"
    assert "invalid continue token" in forged.json()["message"]
    # a negative rv (the real server's inconsistent continuation) reads the latest state
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": -1, "start": f"{ns}/cm-001\x00"}).encode()
    inconsistent = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    later = _get(kube_api, ns, limit=1, **{"continue": inconsistent}).json()
    assert [i["metadata"]["name"] for i in later["items"]] == ["cm-002"]
    onward = _get(kube_api, ns, limit=5, **{"continue": later["metadata"]["continue"]}).json()
    assert [i["metadata"]["name"] for i in onward["items"]] == ["cm-003"]


def test_metrics_count_each_page_as_a_list_request(kube_api: KubeAPI) -> None:
    ns = kube_api.namespace()
    _fill(kube_api, ns, 5)
    token = _get(kube_api, ns, limit=2).json()["metadata"]["continue"]
    while token:
        token = _get(kube_api, ns, limit=2, **{"continue": token}).json()["metadata"].get(
            "continue")
    text = requests.get(f"{kube_api.url}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if 'verb="LIST"' in x
                and 'resource="configmaps"' in x and 'code="200"' in x)
    assert line.endswith(" 3")


def test_kubectl_chunk_size_pages_through_the_list(kube_api: KubeAPI) -> None:
    kubectl = require_binary("kubectl")
    ns = kube_api.namespace()
    _fill(kube_api, ns, 7)
    out = subprocess.run([kubectl, "get", "configmaps", "-n", ns, "--chunk-size=2", "-o",
                          "name", "-v=6"], env=kube_api.env(), capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.split() == [f"configmap/cm-{n:03d}" for n in range(7)]
    assert out.stderr.count("limit=2") == 4  # four pages of at most two

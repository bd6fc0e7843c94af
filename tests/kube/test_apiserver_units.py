"""Unit tests of the stand-in's pure functions: selectors, patches, SSA paths, validation."""

from __future__ import annotations

import pytest

from tools.kube.apiserver import patch, selectors, ssa, validation
from tools.kube.apiserver.errors import ApiError
from tools.kube.apiserver.resources import lookup

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", True), ("app==web", True), ("app!=web", False), ("app!=db", True),
    ("app in (web,db)", True), ("app notin (web,db)", False), ("missing notin (x)", True),
    ("tier", True), ("!tier", False), ("!missing", True), ("missing", False),
    ("app=web,tier in (front),!missing", True), ("app=web,env=dev", False), ("", True),
])
def test_label_selectors(selector: str, expected: bool) -> None:
    assert selectors.match_labels(selectors.parse_labels(selector), LABELS) is expected


def test_label_selector_syntax_error_is_bad_request() -> None:
    with pytest.raises(ApiError) as err:
        selectors.parse_labels("app in web")
    assert err.value.code == 400


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert selectors.parse_fields("metadata.name=p,status.phase=Running", "pods")(pod)
    assert not selectors.parse_fields("status.phase!=Running", "pods")(pod)
    with pytest.raises(ApiError) as err:
        selectors.parse_fields("spec.bogus=1", "configmaps")
    assert err.value.code == 400 and "field label not supported" in err.value.message
    ev = {"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}}
    assert selectors.parse_fields("involvedObject.kind=Pod,involvedObject.name=p", "events")(ev)


def test_selector_from_label_selector_object() -> None:
    reqs = selectors.selector_from_match({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod"]},
        {"key": "x", "operator": "DoesNotExist"}]})
    assert selectors.match_labels(reqs, LABELS)


def test_json_patch_all_ops() -> None:
    doc = {"a": {"b": [1, 2]}, "c": 1}
    out = patch.json_patch(doc, [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "add", "path": "/a/b/0", "value": 0},
        {"op": "replace", "path": "/c", "value": 2},
        {"op": "copy", "from": "/c", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e"},
        {"op": "remove", "path": "/a/b/1"},
        {"op": "test", "path": "/e", "value": 2},
        {"op": "add", "path": "/f~1g", "value": "slash"},
    ])
    assert out == {"a": {"b": [0, 2, 3]}, "c": 2, "e": 2, "f/g": "slash"}
    assert doc == {"a": {"b": [1, 2]}, "c": 1}  # input untouched


def test_json_patch_failures_are_422() -> None:
    for ops in ([{"op": "test", "path": "/c", "value": 5}], [{"op": "remove", "path": "/x"}],
                [{"op": "replace", "path": "/x/y", "value": 1}]):
        with pytest.raises(ApiError) as err:
            patch.json_patch({"c": 1}, ops)
        assert err.value.code == 422


def test_merge_patch_rfc7386() -> None:
    assert patch.merge_patch({"a": "b", "c": {"d": "e", "f": "g"}},
                             {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert patch.merge_patch({"l": [1, 2]}, {"l": [3]}) == {"l": [3]}


def _deploy(containers: list[dict[str, object]], **spec: object) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": containers, **spec}}}}


def test_strategic_merge_lists_merge_by_key() -> None:
    orig = _deploy([{"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}],
                     "ports": [{"containerPort": 80}],
                     "volumeMounts": [{"name": "v", "mountPath": "/m"}]},
                    {"name": "b", "image": "y:1"}],
                   volumes=[{"name": "v", "emptyDir": {}}],
                   imagePullSecrets=[{"name": "s1"}],
                   tolerations=[{"key": "k1", "operator": "Exists"}])
    p = {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 81}],
                        "volumeMounts": [{"mountPath": "/n", "name": "w"}]},
                       {"name": "c", "image": "z:1"}],
        "volumes": [{"name": "w", "configMap": {"name": "cm"}}],
        "imagePullSecrets": [{"name": "s2"}],
        "tolerations": [{"key": "k2", "operator": "Exists"}]}}}}
    out = patch.strategic_merge_for(orig, p)
    pod = out["spec"]["template"]["spec"]
    a = pod["containers"][0]
    assert [c["name"] for c in pod["containers"]] == ["a", "b", "c"]
    assert a["image"] == "x:2"
    assert [e["name"] for e in a["env"]] == ["A", "B"]
    assert [p["containerPort"] for p in a["ports"]] == [80, 81]
    assert [m["mountPath"] for m in a["volumeMounts"]] == ["/m", "/n"]
    assert [v["name"] for v in pod["volumes"]] == ["v", "w"]
    assert [s["name"] for s in pod["imagePullSecrets"]] == ["s1", "s2"]
    assert pod["tolerations"] == [{"key": "k2", "operator": "Exists"}]  # atomic: replaced


def test_strategic_merge_directives() -> None:
    orig = _deploy([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}])
    orig["metadata"]["labels"] = {"x": "1", "y": "2"}
    orig["metadata"]["finalizers"] = ["f1", "f2"]
    out = patch.strategic_merge_for(orig, {
        "metadata": {"labels": {"x": None}, "$deleteFromPrimitiveList/finalizers": ["f1"]},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}}})
    assert out["metadata"]["labels"] == {"y": "2"}
    assert out["metadata"]["finalizers"] == ["f2"]
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["b"]
    out = patch.strategic_merge_for(orig, {"spec": {"template": {"spec": {
        "containers": [{"name": "n", "image": "z"}, {"$patch": "replace"}]}}}})
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["n"]
    out = patch.strategic_merge_for(orig, {"spec": {"template": {"$patch": "replace",
                                                                 "spec": {"containers": []}}}})
    assert out["spec"]["template"] == {"spec": {"containers": []}}
    out = patch.strategic_merge_for(orig, {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [{"name": "a", "image": "x2"}]}}}})
    assert [c["name"] for c in out["spec"]["template"]["spec"]["containers"]] == ["b", "a"]


def test_ssa_leaf_paths_and_fields_v1_roundtrip() -> None:
    obj = _deploy([{"name": "a", "image": "x", "ports": [{"containerPort": 80}]}])
    obj["metadata"]["labels"] = {"app": "a"}
    paths = ssa.leaf_paths(obj)
    assert ("f:metadata", "f:labels", "f:app") in paths
    key = 'k:{"name":"a"}'
    assert ("f:spec", "f:template", "f:spec", "f:containers", key, "f:image") in paths
    assert ssa.from_fields_v1(ssa.to_fields_v1(paths)) == paths
    assert ssa.path_text(("f:spec", "f:template", "f:spec", "f:containers", key, "f:image")) \
        == '.spec.template.spec.containers[name="a"].image'


def test_ssa_conflict_force_and_removal() -> None:
    cfg = _deploy([{"name": "a", "image": "x:1"}], replicas=None)
    cfg["spec"] = {"replicas": 2, **cfg["spec"]}  # type: ignore[dict-item]
    obj = ssa.server_side_apply(None, cfg, "one", force=False)
    ssa.record_update(obj, {**obj, "spec": {**obj["spec"], "replicas": 3}}, "editor")
    edited = {**obj, "spec": {**obj["spec"], "replicas": 3}}
    ssa.record_update(obj, edited, "editor")
    with pytest.raises(ApiError) as err:
        ssa.server_side_apply(edited, cfg, "one", force=False)
    assert err.value.code == 409
    assert err.value.message == ('Apply failed with 1 conflict: conflict with "editor" using '
                                 "apps/v1: .spec.replicas")
    forced = ssa.server_side_apply(edited, cfg, "one", force=True)
    assert forced["spec"]["replicas"] == 2
    assert [m["manager"] for m in forced["metadata"]["managedFields"]] == ["one"]
    smaller = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": 2}}
    pruned = ssa.server_side_apply(forced, smaller, "one", force=False)
    assert "template" not in pruned["spec"] or not pruned["spec"]["template"]["spec"].get(
        "containers")


@pytest.mark.parametrize(("plural", "name", "ok"), [
    ("configmaps", "a.b-c", True), ("configmaps", "A", False), ("configmaps", "-a", False),
    ("configmaps", "a" * 254, False), ("namespaces", "a.b", False), ("namespaces", "ab-1", True),
    ("services", "1abc", False), ("services", "abc", True), ("clusterroles", "system:x", True),
])
def test_name_validation(plural: str, name: str, ok: bool) -> None:
    group = "rbac.authorization.k8s.io" if plural == "clusterroles" else ""
    res = lookup(group, "v1", plural)
    assert res is not None
    assert (validation.name_causes(res, name) == []) is ok


def test_label_value_validation_message() -> None:
    causes = validation.label_causes({"app": "bad value!"})
    assert causes and causes[0]["field"] == "metadata.labels"
    assert "a valid label must be an empty string" in causes[0]["message"]

"""Protobuf request bodies (typed client-go clients, e.g. `kubectl create secret`,
`kubectl create namespace|deployment|job`, helm's release Secrets, `kubectl scale`,
`kubectl auth can-i`).

Only the kinds such clients create imperatively are decoded (see KINDS), and for
Deployment/Job only the fields `kubectl create` sets (image, command, ports, env,
replicas, labels...). Other kinds answer 415 with a clear message."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError

MAGIC = b"k8s\x00"

# field number -> (json name, type); type is "string", "bool", "int", "bytes", "time",
# "map:string", "map:bytes", "[string]", "[MessageName]" or a message name.
Schema = dict[int, tuple[str, str]]
MESSAGES: dict[str, Schema] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "bytes"),
                3: ("contentEncoding", "string"), 4: ("contentType", "string")},
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {1: ("name", "string"), 2: ("generateName", "string"),
                   3: ("namespace", "string"), 4: ("selfLink", "string"), 5: ("uid", "string"),
                   6: ("resourceVersion", "string"), 7: ("generation", "int"),
                   8: ("creationTimestamp", "time"), 9: ("deletionTimestamp", "time"),
                   10: ("deletionGracePeriodSeconds", "int"), 11: ("labels", "map:string"),
                   12: ("annotations", "map:string"),
                   13: ("ownerReferences", "[OwnerReference]"), 14: ("finalizers", "[string]"),
                   17: ("managedFields", "[ManagedFieldsEntry]")},
    "OwnerReference": {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                       5: ("apiVersion", "string"), 6: ("controller", "bool"),
                       7: ("blockOwnerDeletion", "bool")},
    "ManagedFieldsEntry": {1: ("manager", "string"), 2: ("operation", "string"),
                           3: ("apiVersion", "string"), 4: ("time", "time"),
                           6: ("fieldsType", "string"), 7: ("fieldsV1", "FieldsV1"),
                           8: ("subresource", "string")},
    "FieldsV1": {1: ("Raw", "bytes")},
    "Time": {1: ("seconds", "int"), 2: ("nanos", "int")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", "string"),
               4: ("stringData", "map:string"), 5: ("immutable", "bool")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:string"),
                  3: ("binaryData", "map:bytes"), 4: ("immutable", "bool")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"),
                  3: ("status", "NamespaceStatus")},
    "NamespaceSpec": {1: ("finalizers", "[string]")},
    "NamespaceStatus": {1: ("phase", "string")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "[ObjectReference]"),
                       3: ("imagePullSecrets", "[LocalObjectReference]"),
                       4: ("automountServiceAccountToken", "bool")},
    "ObjectReference": {1: ("kind", "string"), 2: ("namespace", "string"), 3: ("name", "string"),
                        4: ("uid", "string"), 5: ("apiVersion", "string"),
                        6: ("resourceVersion", "string"), 7: ("fieldPath", "string")},
    "LocalObjectReference": {1: ("name", "string")},
    "Scale": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ScaleSpec"),
              3: ("status", "ScaleStatus")},
    "ScaleSpec": {1: ("replicas", "int")},
    "ScaleStatus": {1: ("replicas", "int"), 2: ("selector", "string")},
    "DeleteOptions": {1: ("gracePeriodSeconds", "int"), 2: ("preconditions", "Preconditions"),
                      3: ("orphanDependents", "bool"), 4: ("propagationPolicy", "string"),
                      5: ("dryRun", "[string]")},
    "Preconditions": {1: ("uid", "string"), 2: ("resourceVersion", "string")},
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "int"), 2: ("selector", "LabelSelector"),
                       3: ("template", "PodTemplateSpec"), 4: ("strategy", "DeploymentStrategy"),
                       5: ("minReadySeconds", "int"), 6: ("revisionHistoryLimit", "int"),
                       7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int")},
    "DeploymentStrategy": {1: ("type", "string")},
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    "JobSpec": {1: ("parallelism", "int"), 2: ("completions", "int"),
                3: ("activeDeadlineSeconds", "int"), 4: ("selector", "LabelSelector"),
                5: ("manualSelector", "bool"), 6: ("template", "PodTemplateSpec"),
                7: ("backoffLimit", "int"), 8: ("ttlSecondsAfterFinished", "int"),
                9: ("completionMode", "string"), 10: ("suspend", "bool")},
    "LabelSelector": {1: ("matchLabels", "map:string")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "[Container]"), 3: ("restartPolicy", "string"),
                4: ("terminationGracePeriodSeconds", "int"), 6: ("dnsPolicy", "string"),
                7: ("nodeSelector", "map:string"), 8: ("serviceAccountName", "string"),
                10: ("nodeName", "string"), 11: ("hostNetwork", "bool"),
                15: ("imagePullSecrets", "[LocalObjectReference]"),
                16: ("hostname", "string"), 19: ("schedulerName", "string"),
                20: ("initContainers", "[Container]"), 24: ("priorityClassName", "string")},
    "Container": {1: ("name", "string"), 2: ("image", "string"), 3: ("command", "[string]"),
                  4: ("args", "[string]"), 5: ("workingDir", "string"),
                  6: ("ports", "[ContainerPort]"), 7: ("env", "[EnvVar]"),
                  13: ("terminationMessagePath", "string"), 14: ("imagePullPolicy", "string"),
                  16: ("stdin", "bool"), 17: ("stdinOnce", "bool"), 18: ("tty", "bool"),
                  20: ("terminationMessagePolicy", "string")},
    "ContainerPort": {1: ("name", "string"), 2: ("hostPort", "int"), 3: ("containerPort", "int"),
                      4: ("protocol", "string"), 5: ("hostIP", "string")},
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "PolicyRule": {1: ("verbs", "[string]"), 2: ("apiGroups", "[string]"),
                   3: ("resources", "[string]"), 4: ("resourceNames", "[string]"),
                   5: ("nonResourceURLs", "[string]")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"),
                    3: ("roleRef", "RoleRef")},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"),
                           3: ("roleRef", "RoleRef")},
    "Subject": {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"),
                4: ("namespace", "string")},
    "RoleRef": {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")},
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"),
                                2: ("spec", "SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", "string"), 2: ("verb", "string"),
                           3: ("group", "string"), 4: ("version", "string"),
                           5: ("resource", "string"), 6: ("subresource", "string"),
                           7: ("name", "string")},
    "NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
}
KINDS = {"Namespace", "Secret", "ConfigMap", "ServiceAccount", "Scale", "DeleteOptions",
         "SelfSubjectAccessReview", "Deployment", "Job", "Role", "ClusterRole", "RoleBinding",
         "ClusterRoleBinding"}
# proto2 bodies carry zero values of non-pointer fields; these are pointers in Go, where
# an explicit 0/false is meaningful and must be kept
KEEP_ZERO = {"replicas", "parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished",
             "terminationGracePeriodSeconds", "activeDeadlineSeconds", "revisionHistoryLimit",
             "progressDeadlineSeconds", "deletionGracePeriodSeconds", "gracePeriodSeconds",
             "immutable", "automountServiceAccountToken", "suspend", "manualSelector",
             "controller", "blockOwnerDeletion", "orphanDependents"}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def wire_fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) triples; value is int or bytes."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        val: Any
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 1:
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _value(typ: str, val: Any) -> Any:
    if typ == "string":
        return val.decode()
    if typ == "bool":
        return bool(val)
    if typ == "int":
        return _signed(val)
    if typ == "bytes":
        return base64.b64encode(val).decode()
    if typ == "time":
        t = decode_message("Time", val)
        return datetime.fromtimestamp(t.get("seconds", 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if typ == "FieldsV1":
        import json
        raw = decode_message("FieldsV1", val).get("Raw")
        return json.loads(base64.b64decode(raw)) if raw else {}
    return decode_message(typ, val)


def decode_message(name: str, buf: bytes) -> dict[str, Any]:
    schema = MESSAGES[name]
    out: dict[str, Any] = {}
    for num, _, val in wire_fields(buf):
        if num not in schema:
            continue
        key, typ = schema[num]
        if typ.startswith("map:"):
            entry = dict((n, v) for n, _, v in wire_fields(val))
            k = entry.get(1, b"").decode()
            v = entry.get(2, b"")
            out.setdefault(key, {})[k] = base64.b64encode(v).decode() \
                if typ == "map:bytes" else v.decode()
        elif typ.startswith("["):
            out.setdefault(key, []).append(_value(typ[1:-1], val))
        else:
            v = _value(typ, val)
            if v in ("", {}) or (typ == "time" and v.startswith("1970-01-01")) or \
                    (typ in ("int", "bool") and not v and key not in KEEP_ZERO):
                continue  # Go's omitempty: proto2 bodies carry zero values
            out[key] = v
    return out


def decode_protobuf(body: bytes) -> Any:
    if not body.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "protobuf body without the k8s envelope")
    env = decode_message("Unknown", body[len(MAGIC):])
    tm = env.get("typeMeta") or {}
    kind = tm.get("kind", "")
    if kind not in KINDS:
        raise ApiError(415, "UnsupportedMediaType",
                       f"the stand-in decodes protobuf bodies only for {sorted(KINDS)}, not "
                       f"{kind!r}; send JSON (e.g. `kubectl create ... --dry-run=client -o yaml "
                       "| kubectl apply -f -`)")
    obj = decode_message(kind, base64.b64decode(env.get("raw", "")))
    obj = {"apiVersion": tm.get("apiVersion", ""), "kind": kind, **obj}
    if kind == "Scale":
        obj.setdefault("spec", {}).setdefault("replicas", 0)
    return obj

"""The deployment's own Secret: model URIs for the storage initializer, the last-good spec.

Annotations and pod specs are read by anyone with `get deployments`, and they end up in
`kubectl get -o yaml`, GitOps repositories and support bundles; a model URI may carry user
info or a signed query (`X-Amz-Signature`, SAS `sig=`), a spec carries env values. Both live
in one Secret per deployment (`<name>-model`) instead, owned by the Deployment so the
garbage collector removes it with it; the Deployment keeps only a hash of the spec.

Keys: `uri-<hash of the URI>` for each model URI a pod template may still need (the new
one, the one the running pods came from, the last good one: a pod of the old ReplicaSet
that restarts mid-rollout, or a rollback, reads its own URI), and `last-good-spec`
(written by `history.record_last_good` under its own field manager).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from agent.errors import AgentError
from agent.plugins.kubernetes.apply import apply_all
from agent.plugins.kubernetes.client import KubeClient

SUFFIX = "-model"
URI_ENV = "MODEL_URI"
LAST_GOOD_SPEC_KEY = "last-good-spec"


def secret_name(object_name: str) -> str:
    """The Secret of the deployment whose objects are called `object_name`."""
    return object_name + SUFFIX


def text_hash(text: str) -> str:
    """`sha256:<hex>`: what an annotation keeps of a spec."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def uri_key(uri: str) -> str:
    """The Secret key holding `uri` (a hash: keys are visible to whoever may list Secrets)."""
    return "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:16]


def uri_env(secret: str, uri: str) -> dict[str, Any]:
    """The container env entry that reads `uri` from `secret`."""
    return {"name": URI_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": uri_key(uri)}}}


def render_secret(name: str, namespace: str, labels: Mapping[str, str],
                  data: Mapping[str, str]) -> dict[str, Any]:
    """An Opaque Secret holding `data` (base64 in `data`, never `stringData`: server-side
    apply tracks `data` keys, so a key dropped from a later apply is removed)."""
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())}}


def decoded(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """A live Secret's data as text."""
    return {k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in ((secret or {}).get("data") or {}).items()}


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to a live object (no blockOwnerDeletion: that needs `update` on the
    owner's finalizers, which the agent's Role does not grant)."""
    meta = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": meta["name"],
            "uid": meta["uid"]}


def owned(secret: Mapping[str, Any], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """`secret` with an ownerReference to `owner` (unchanged when there is no owner yet)."""
    if owner is None or not owner.get("metadata", {}).get("uid"):
        return dict(secret)
    meta = {**secret["metadata"], "ownerReferences": [owner_reference(owner)]}
    return {**secret, "metadata": meta}


def referenced_keys(deployment: Mapping[str, Any] | None) -> set[str]:
    """The `uri-*` keys the live Deployment's pod template reads from its Secret."""
    spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    keys = set()
    for container in spec.get("initContainers") or []:
        for item in container.get("env") or []:
            ref = (item.get("valueFrom") or {}).get("secretKeyRef") or {}
            if item.get("name") == URI_ENV and ref.get("key"):
                keys.add(str(ref["key"]))
    return keys


def with_kept_uris(secret: Mapping[str, Any], live_secret: Mapping[str, Any] | None,
                   live: Mapping[str, Any] | None, extra_uris: Iterable[str]) -> dict[str, Any]:
    """`secret` (as rendered) plus the URIs the running pods and a rollback still need."""
    keep = decoded(live_secret)
    data = {k: v for k, v in keep.items() if k in referenced_keys(live)}
    data.update({uri_key(uri): uri for uri in extra_uris})
    data.update(decoded(secret))
    meta = secret["metadata"]
    return render_secret(meta["name"], meta["namespace"], meta.get("labels") or {}, data)


def apply_with_owner(client: KubeClient, secret: Mapping[str, Any],
                     owner: Mapping[str, Any] | None) -> None:
    """Server-side apply the Secret, owned by `owner` when it exists."""
    client.apply(owned(secret, owner))


def apply_with_secret(client: KubeClient, name: str, objects: list[dict[str, Any]],
                      live: dict[str, Any] | None, kept_uris: list[str]) -> None:
    """Apply `objects`; the deployment's Secret first (its pods read it), owned by the
    Deployment, keeping `kept_uris` (what the running pods and a rollback still need)."""
    secret = next((o for o in objects if o["kind"] == "Secret"), None)
    rest = [o for o in objects if o is not secret]
    if secret is None:
        apply_all(client, rest)
        return
    secret = with_kept_uris(secret, client.get("v1", "Secret", secret_name(name)), live,
                            kept_uris)
    apply_with_owner(client, secret, live)
    try:
        applied = apply_all(client, rest)
    except AgentError:
        if live is None:  # nothing owns the Secret yet: do not leave the URI behind
            client.delete("v1", "Secret", secret["metadata"]["name"])
        raise
    if live is None:  # a first start: the Deployment exists only now
        owner = next(o for o in applied if o.get("kind") == "Deployment")
        apply_with_owner(client, secret, owner)

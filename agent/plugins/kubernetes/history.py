"""Last-good bookkeeping: the spec and image that last rolled out, kept with the Deployment.

A rollback returns to the last model that became available, never to the last
one *applied* (that one may never have worked). The spec is kept in the
deployment's Secret (`modelsecret`: env values and model URIs are no annotation
material), the Deployment carries its hash and the image as annotations; both
writes use a field manager of their own, so the main server-side apply never
removes them, and they survive agent restarts and re-delivered actions.

Deployments written by earlier agents carry the whole spec in the
`last-good-spec` annotation: it is read once and moved (`migrate`).
"""

from __future__ import annotations

import logging
from typing import Any

from agent.model import DeploymentSpec
from agent.plugins.kubernetes import modelsecret, names
from agent.plugins.kubernetes.client import KubeClient

log = logging.getLogger(__name__)

LAST_GOOD_MANAGER = "management-agent-last-good"
ANNOTATION_LAST_GOOD_HASH = "management-agent.io/last-good-spec-hash"

#: (spec, image) of a rollout that succeeded
Good = tuple[DeploymentSpec, str]


def _annotations(deployment: dict[str, Any] | None) -> dict[str, str]:
    return dict(((deployment or {}).get("metadata") or {}).get("annotations") or {})


def last_good(client: KubeClient, deployment: dict[str, Any] | None) -> Good | None:
    """(spec, image) to roll back to: the last rollout that succeeded, if any."""
    annotations = _annotations(deployment)
    image = annotations.get(names.ANNOTATION_LAST_GOOD_IMAGE)
    legacy = annotations.get(names.ANNOTATION_LAST_GOOD_SPEC)
    wanted_hash = annotations.get(ANNOTATION_LAST_GOOD_HASH)
    if deployment is None or not image or not (legacy or wanted_hash):
        return None
    raw = legacy
    if raw is None:
        meta = deployment["metadata"]
        secret = client.get("v1", "Secret", modelsecret.secret_name(meta["name"]),
                            meta.get("namespace"))
        raw = modelsecret.decoded(secret).get(modelsecret.LAST_GOOD_SPEC_KEY)
        if raw is None or modelsecret.text_hash(raw) != wanted_hash:
            log.warning("deployment %s: the last good spec is missing from its Secret or does "
                        "not match its hash; no rollback target", meta["name"])
            return None
    try:
        return DeploymentSpec.model_validate_json(raw), image
    except ValueError:
        return None


def needs_migration(deployment: dict[str, Any] | None) -> bool:
    """True when the Deployment still carries a whole spec in an annotation."""
    return names.ANNOTATION_LAST_GOOD_SPEC in _annotations(deployment)


def record_last_good(client: KubeClient, name: str, namespace: str, good: Good,
                     live: dict[str, Any] | None) -> None:
    """Remember `good` for the Deployment `name`; no write when `live` already says so.

    The spec goes to the Secret first, then the hash to the Deployment: a crash in
    between leaves a hash that does not match, never a hash without its spec.
    """
    spec, image = good
    raw = spec.model_dump_json(exclude_defaults=True)
    wanted = {ANNOTATION_LAST_GOOD_HASH: modelsecret.text_hash(raw),
              names.ANNOTATION_LAST_GOOD_IMAGE: image}
    current = _annotations(live)
    if all(current.get(k) == v for k, v in wanted.items()) and not needs_migration(live):
        return
    secret = modelsecret.render_secret(modelsecret.secret_name(name), namespace,
                                       names.owner_labels(spec.id, None),
                                       {modelsecret.LAST_GOOD_SPEC_KEY: raw})
    client.apply(modelsecret.owned(secret, live), field_manager=LAST_GOOD_MANAGER)
    # the legacy annotation was written by this field manager: leaving it out removes it
    client.apply(
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": namespace, "annotations": wanted}},
        field_manager=LAST_GOOD_MANAGER,
    )


def migrate(client: KubeClient, name: str, namespace: str,
            live: dict[str, Any] | None) -> None:
    """Move a whole spec kept in an annotation by an earlier agent into the Secret."""
    if not needs_migration(live):
        return
    good = last_good(client, live)
    if good is not None:
        record_last_good(client, name, namespace, good, live)
        log.info("deployment %s: moved the last good spec from an annotation to Secret %s",
                 name, modelsecret.secret_name(name))

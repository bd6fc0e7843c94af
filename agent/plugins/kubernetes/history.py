"""Last-good bookkeeping: the spec and image that last rolled out, kept on the Deployment.

A rollback returns to the last model that became available, never to the last
one *applied* (that one may never have worked). The pair is written as two
annotations with a field manager of its own, so the main server-side apply
never removes them, and it survives agent restarts and re-delivered actions.
"""

from __future__ import annotations

from typing import Any

from agent.model import DeploymentSpec
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.client import KubeClient

LAST_GOOD_MANAGER = "management-agent-last-good"

#: (spec, image) of a rollout that succeeded
Good = tuple[DeploymentSpec, str]


def last_good(deployment: dict[str, Any] | None) -> Good | None:
    """(spec, image) to roll back to: the last rollout that succeeded, if any."""
    if deployment is None:
        return None
    annotations = deployment["metadata"].get("annotations") or {}
    raw = annotations.get(names.ANNOTATION_LAST_GOOD_SPEC)
    image = annotations.get(names.ANNOTATION_LAST_GOOD_IMAGE)
    if not raw or not image:
        return None
    try:
        return DeploymentSpec.model_validate_json(raw), image
    except ValueError:
        return None


def record_last_good(client: KubeClient, name: str, namespace: str, good: Good,
                     live: dict[str, Any] | None) -> None:
    """Remember `good` on the Deployment `name`; no write when `live` already says so."""
    spec, image = good
    wanted = {names.ANNOTATION_LAST_GOOD_SPEC: spec.model_dump_json(exclude_defaults=True),
              names.ANNOTATION_LAST_GOOD_IMAGE: image}
    current = ((live or {}).get("metadata") or {}).get("annotations") or {}
    if all(current.get(k) == v for k, v in wanted.items()):
        return
    client.apply(
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": namespace, "annotations": wanted}},
        field_manager=LAST_GOOD_MANAGER,
    )

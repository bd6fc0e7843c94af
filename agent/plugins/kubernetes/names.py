"""Object names, label values and the label keys that make deployments findable.

Everything the plugin creates carries `app.kubernetes.io/managed-by:
management-agent` and `management-agent.io/deployment-id`, so that status,
stop and orphan detection are label queries, not bookkeeping. Names and label
values are cut to 63 characters with a hash suffix, so two long ids never
collide.
"""

from __future__ import annotations

import hashlib
import re

MANAGED_BY = "management-agent"
APP_NAME = "prediction-server"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_DEPLOYMENT_ID = "management-agent.io/deployment-id"
LABEL_MODEL_ID = "management-agent.io/model-id"
LABEL_ENVIRONMENT_ID = "management-agent.io/environment-id"
LABEL_TEMPLATE_HASH = "management-agent.io/template-hash"
LABEL_IMAGE_TAG = "management-agent.io/image-tag"

ANNOTATION_DEPLOYMENT_ID = "management-agent.io/deployment-id"
ANNOTATION_MODEL_ID = "management-agent.io/model-id"
ANNOTATION_ENVIRONMENT_ID = "management-agent.io/environment-id"
ANNOTATION_SPEC = "management-agent.io/spec"
ANNOTATION_IMAGE = "management-agent.io/image"
ANNOTATION_PREDICTION_URL = "management-agent.io/prediction-url"
ANNOTATION_RESTARTED_AT = "management-agent.io/restartedAt"
ANNOTATION_LAST_GOOD_SPEC = "management-agent.io/last-good-spec"
ANNOTATION_LAST_GOOD_IMAGE = "management-agent.io/last-good-image"

MAX_NAME = 63
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def short_hash(value: str, length: int = 8) -> str:
    """A stable hex digest prefix of `value`."""
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def object_name(deployment_id: str, prefix: str = "mlops-") -> str:
    """A DNS-1035 label (valid for every kind, Services included), <= 63 chars, collision-free.

    `prefix + id` when that fits and is valid; otherwise a cleaned, truncated
    form with a hash of the full id appended.
    """
    candidate = f"{prefix}{deployment_id}"
    if len(candidate) <= MAX_NAME and _DNS_LABEL.match(candidate):
        return candidate
    cleaned = re.sub(r"[^a-z0-9-]+", "-", candidate.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"d-{cleaned}"
    suffix = short_hash(candidate)
    head = cleaned[: MAX_NAME - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}"


def label_value(value: str) -> str:
    """`value` as a valid label value (<= 63 chars, alphanumerics, '-', '_', '.')."""
    if len(value) <= MAX_NAME and _LABEL_VALUE.match(value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    suffix = short_hash(value)
    head = re.sub(r"[^A-Za-z0-9]+$", "", cleaned[: MAX_NAME - len(suffix) - 1])
    return f"{head}-{suffix}" if head else suffix


def selector_labels(deployment_id: str) -> dict[str, str]:
    """The immutable pod selector of one deployment's servers."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: label_value(deployment_id)}


def owner_labels(deployment_id: str | None, model_id: str | None) -> dict[str, str]:
    """Who an object belongs to: every object the agent creates (servers, build Jobs)."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY}
    if deployment_id:
        labels[LABEL_DEPLOYMENT_ID] = label_value(deployment_id)
    if model_id:
        labels[LABEL_MODEL_ID] = label_value(model_id)
    return labels


def common_labels(deployment_id: str, model_id: str, environment_id: str) -> dict[str, str]:
    """Labels of every object of a deployment."""
    return {
        **selector_labels(deployment_id),
        **owner_labels(deployment_id, model_id),
        LABEL_VERSION: label_value(model_id),
        LABEL_ENVIRONMENT_ID: label_value(environment_id),
    }


def managed_selector(environment_id: str | None = None, deployment_id: str | None = None) -> str:
    """A label selector for managed objects, narrowed to an environment and/or a deployment."""
    parts = [f"{LABEL_MANAGED_BY}={MANAGED_BY}"]
    if environment_id is not None:
        parts.append(f"{LABEL_ENVIRONMENT_ID}={label_value(environment_id)}")
    if deployment_id is not None:
        parts.append(f"{LABEL_DEPLOYMENT_ID}={label_value(deployment_id)}")
    return ",".join(parts)

"""Checks a deployment spec must pass before anything touches a cluster or a registry.

Everything here raises `InvalidActionError` with a message naming the bad
field: resources in Kubernetes quantity notation, environment variable names,
autoscaling bounds, the types in `spec.config` (`options`), the server
profile (`profiles`) and whether the delivery mode can serve the model
(`agent.images.delivery`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent.errors import InvalidActionError
from agent.images.delivery import DeliveryMode, check_delivery, delivery_mode
from agent.model import DeploymentSpec
from agent.plugins.kubernetes.netpol import store_egress
from agent.plugins.kubernetes.options import deployment_options
from agent.plugins.kubernetes.policy import check_policy
from agent.plugins.kubernetes.profiles import profile_name, profiles, resolve_profile
from agent.plugins.kubernetes.settings import KubernetesSettings, ServerProfile

# Kubernetes resource.Quantity grammar (non-negative; signs are never meaningful here).
_QUANTITY = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_RESOURCE_NAME = re.compile(
    r"^(cpu|memory|ephemeral-storage|hugepages-[A-Za-z0-9.]+|"
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _fail(spec: DeploymentSpec, message: str) -> InvalidActionError:
    return InvalidActionError(f"deployment {spec.id}: {message}")


def is_quantity(value: str) -> bool:
    """True when `value` follows the Kubernetes quantity grammar (e.g. 500m, 1.5Gi, 2)."""
    return bool(_QUANTITY.match(value))



def resources(spec: DeploymentSpec, settings: KubernetesSettings) -> dict[str, dict[str, str]]:
    if spec.resources is not None and (spec.resources.requests or spec.resources.limits):
        chosen = {"requests": dict(spec.resources.requests), "limits": dict(spec.resources.limits)}
    else:
        chosen = {key: dict(value) for key, value in settings.default_resources.items()}
    return {key: value for key, value in chosen.items() if value}


def validate_spec(spec: DeploymentSpec, settings: KubernetesSettings,
                  mode: DeliveryMode | None = None,
                  fetcher_env: Mapping[str, str] | None = None) -> ServerProfile:
    """Reject what cannot be served or what ops' policy forbids, before any cluster call.

    Returns the effective profile. `mode`: the delivery mode
    (`agent.images.delivery.delivery_mode`); None decides it from
    `settings.model_delivery` alone (`auto` counts as image). `fetcher_env`:
    what the storage initializer is told (the model stores its egress needs).
    The deployment id was checked where the spec was parsed (`DeploymentSpec`).
    """
    for section, values in resources(spec, settings).items():
        if section not in ("requests", "limits"):
            raise _fail(spec, f"unknown resources section {section!r}")
        for resource, quantity in values.items():
            if not _RESOURCE_NAME.match(resource):
                raise _fail(spec, f"resources.{section}: invalid resource name {resource!r}")
            if not is_quantity(str(quantity)):
                raise _fail(
                    spec, f"resources.{section}.{resource}: {quantity!r} is not a Kubernetes "
                    "quantity (examples: 500m, 2, 1.5Gi, 512Mi)",
                )
    for key in spec.env:
        if not _ENV_NAME.match(key):
            raise _fail(spec, f"env: invalid variable name {key!r}")
    if spec.autoscaling is not None and settings.autoscaling.enabled:
        if spec.autoscaling.min_replicas > spec.autoscaling.max_replicas:
            raise _fail(spec, "autoscaling.min_replicas must not exceed max_replicas")
        if "cpu" not in resources(spec, settings).get("requests", {}):
            raise _fail(
                spec, "autoscaling needs a CPU request: set resources.requests.cpu "
                "(the HPA scales on CPU utilisation relative to the request)",
            )
    options = deployment_options(spec)  # wrong types in spec.config are named first
    profile = resolve_profile(spec, settings)
    check_policy(spec, options, settings, profiles(settings)[profile_name(spec, settings)],
                 profile)
    if mode is None:
        mode = delivery_mode(spec.model, settings.model_delivery)
    check_delivery(spec, mode, profile.image, settings.agent_image)
    store_egress(spec, settings, mode, fetcher_env or {})
    if settings.monitoring.enabled and not settings.monitoring.image:
        raise _fail(spec, "plugin.kubernetes.monitoring.enabled needs monitoring.image")
    return profile

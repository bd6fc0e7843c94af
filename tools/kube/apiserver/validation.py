"""Name, label and schema validation with the apiserver's messages.

Schema checks use the real OpenAPI schemas shipped by kubernetes-validate
(Kubernetes 1.33, strict: unknown fields are errors)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from . import version
from .errors import ApiError, bad_request, invalid
from .resources import Resource
from .selectors import match_labels, selector_from_match

SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is '" + SUBDOMAIN + "')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '" + LABEL + "')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start "
               "with an alphabetic character, and end with an alphanumeric character (e.g. "
               "'my-name',  or 'abc-123', regex used for validation is '" + DNS1035 + "')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
                   "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                   "'MyValue',  or 'my_value',  or '12345', regex used for validation is '"
                   + LABEL_VALUE + "')")
QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                 "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  "
                 "or '123-abc', regex used for validation is '" + QUALIFIED_NAME + "')")


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def _invalid_value(value: Any, msg: str) -> str:
    return f"Invalid value: {json.dumps(value)}: {msg}"


def name_causes(res: Resource, name: str, field: str = "metadata.name") -> list[dict[str, str]]:
    if res.name_rule == "path":
        bad = name in (".", "..") or "/" in name or "%" in name
        return [_cause(field, _invalid_value(name, 'may not contain "/"'))] if bad else []
    if res.name_rule == "label" or res.plural == "services":
        if res.plural == "services":
            pattern, msg, limit = DNS1035, DNS1035_MSG, 63
        else:
            pattern, msg, limit = LABEL, LABEL_MSG, 63
    else:
        pattern, msg, limit = SUBDOMAIN, SUBDOMAIN_MSG, 253
    causes = []
    if len(name) > limit:
        causes.append(_cause(field, _invalid_value(name, f"must be no more than {limit} "
                                                   "characters")))
    if not re.fullmatch(pattern, name):
        causes.append(_cause(field, _invalid_value(name, msg)))
    return causes


def label_causes(labels: Any, field: str = "metadata.labels") -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    if not isinstance(labels, dict):
        return causes
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not re.fullmatch(SUBDOMAIN, prefix)) or len(name) > 63 or \
                not re.fullmatch(QUALIFIED_NAME, name):
            causes.append(_cause(field, _invalid_value(key, QUALIFIED_MSG)))
        if not isinstance(value, str):
            continue
        if len(value) > 63:
            causes.append(_cause(field, _invalid_value(value, "must be no more than 63 "
                                                       "characters")))
        elif not re.fullmatch(LABEL_VALUE, value):
            causes.append(_cause(field, _invalid_value(value, LABEL_VALUE_MSG)))
    return causes


# --------------------------------------------------------------------------- schema


@functools.cache
def _validator(api_version: str, kind: str) -> Any:
    try:
        import jsonschema
        import kubernetes_validate
        from referencing import Resource as RefResource
    except ImportError:  # pragma: no cover
        return None
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema/v1.33.0-local-strict"
    gv = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = base / f"{kind.lower()}-{gv}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    registry = RefResource.from_contents(schema) @ _registry(str(base))
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@functools.cache
def _registry(base: str) -> Any:
    from referencing import Registry
    from referencing import Resource as RefResource

    defs = json.loads((Path(base) / "_definitions.json").read_text())
    return RefResource.from_contents(defs) @ Registry()


def _field_path(path: Any) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_check(res: Resource, obj: dict[str, Any], field_validation: str) -> list[str]:
    """Validate obj against the real schema. Raises 400 (unknown fields, Strict) or
    422 (everything else); returns warnings (unknown fields under Warn)."""
    if not res.validate:
        return []
    validator = _validator(obj.get("apiVersion", ""), obj.get("kind", ""))
    if validator is None:
        return []
    causes: list[dict[str, str]] = []
    unknown: list[str] = []
    for err in validator.iter_errors(obj):
        for leaf in (err.context or [err]) if err.validator in ("anyOf", "oneOf") else [err]:
            _collect(leaf, causes, unknown)
    warnings = []
    if unknown:
        if field_validation == "Strict":
            kind = obj.get("kind", "")
            msg = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise bad_request(f'{kind} in version "{res.version}" cannot be handled as a {kind}: '
                              f"strict decoding error: {msg}")
        if field_validation == "Warn":
            warnings = [f'unknown field "{u}"' for u in unknown]
    if causes:
        raise invalid(res, obj.get("metadata", {}).get("name", ""), causes)
    return warnings


def _collect(err: Any, causes: list[dict[str, str]], unknown: list[str]) -> None:
    field = _field_path(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties") or {}))
        unknown.extend(f"{field}.{e}" if field else e for e in extra)
    elif err.validator == "required":
        m = re.match(r"'([^']+)' is a required property", err.message)
        name = m.group(1) if m else "?"
        causes.append(_cause(f"{field}.{name}" if field else name, "Required value",
                             "FieldValueRequired"))
    else:
        causes.append(_cause(field, _invalid_value(err.instance, err.message)))


def strip_unknown(res: Resource, obj: dict[str, Any]) -> None:
    """Drop unknown fields (fieldValidation Ignore/Warn), as the decoder does."""
    if not res.validate:
        return
    validator = _validator(obj.get("apiVersion", ""), obj.get("kind", ""))
    if validator is None:
        return
    for err in validator.iter_errors(obj):
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            for e in set(err.instance) - set(err.schema.get("properties") or {}):
                err.instance.pop(e, None)


# --------------------------------------------------------------------------- semantics


def semantic_causes(res: Resource, obj: dict[str, Any]) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    md = obj.get("metadata") or {}
    causes += label_causes(md.get("labels"))
    spec = obj.get("spec") or {}
    if res.plural in ("deployments", "replicasets", "statefulsets", "daemonsets"):
        sel = spec.get("selector")
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if isinstance(sel, dict):
            if not sel.get("matchLabels") and not sel.get("matchExpressions"):
                causes.append(_cause("spec.selector", _invalid_value(
                    sel, "empty selector is invalid for deployment")))
            elif not match_labels(selector_from_match(sel), tmpl_labels):
                causes.append(_cause("spec.template.metadata.labels", _invalid_value(
                    tmpl_labels, "`selector` does not match template `labels`")))
        pod = (spec.get("template") or {}).get("spec")
        if isinstance(pod, dict):
            causes += _pod_causes(pod, "spec.template.spec")
    elif res.plural == "pods":
        causes += _pod_causes(spec, "spec")
    elif res.plural == "jobs":
        pod = (spec.get("template") or {}).get("spec")
        if isinstance(pod, dict):
            causes += _pod_causes(pod, "spec.template.spec")
            if pod.get("restartPolicy") not in (None, "Never", "OnFailure"):
                causes.append({"reason": "FieldValueNotSupported", "field":
                               "spec.template.spec.restartPolicy", "message":
                               f'Unsupported value: "{pod.get("restartPolicy")}": supported '
                               'values: "OnFailure", "Never"'})
    return causes


def _pod_causes(pod: dict[str, Any], base: str) -> list[dict[str, str]]:
    causes: list[dict[str, str]] = []
    for group in ("containers", "initContainers"):
        seen: set[str] = set()
        for i, c in enumerate(pod.get(group) or []):
            if not isinstance(c, dict):
                continue
            name = c.get("name", "")
            if isinstance(name, str) and name and not re.fullmatch(LABEL, name):
                causes.append(_cause(f"{base}.{group}[{i}].name", _invalid_value(name, LABEL_MSG)))
            if name in seen:
                causes.append({"reason": "FieldValueDuplicate", "field":
                               f"{base}.{group}[{i}].name",
                               "message": f"Duplicate value: {json.dumps(name)}"})
            seen.add(name)
            if group == "containers" and not c.get("image"):
                causes.append(_cause(f"{base}.{group}[{i}].image", "Required value",
                                     "FieldValueRequired"))
            causes += _sleep_causes(c, pod, f"{base}.{group}[{i}].lifecycle")
    if "containers" in pod and not pod.get("containers"):
        causes.append(_cause(f"{base}.containers", "Required value", "FieldValueRequired"))
    if not version.image_volumes_enabled():
        # feature gate ImageVolume off (before 1.35): the server drops `image`, and a volume
        # left without a source is refused
        for i, vol in enumerate(pod.get("volumes") or []):
            if isinstance(vol, dict) and "image" in vol and len(vol) == 2:
                causes.append(_cause(f"{base}.volumes[{i}]",
                                     "Required value: must specify a volume type",
                                     "FieldValueRequired"))
    return causes


def _sleep_causes(container: dict[str, Any], pod: dict[str, Any],
                  base: str) -> list[dict[str, str]]:
    """validateSleepAction: a hook's sleep must fit in the termination grace period."""
    causes: list[dict[str, str]] = []
    grace = pod.get("terminationGracePeriodSeconds", 30)
    lifecycle = container.get("lifecycle")
    if not isinstance(lifecycle, dict) or not isinstance(grace, int):
        return causes
    zero_ok = version.minor() >= 33  # AllowPodLifecycleSleepActionZeroValue: beta, on
    for hook in ("postStart", "preStop"):
        sleep = (lifecycle.get(hook) or {}).get("sleep")
        seconds = sleep.get("seconds") if isinstance(sleep, dict) else None
        if not isinstance(seconds, int):
            continue
        if zero_ok and not 0 <= seconds <= grace:
            msg = f"must be non-negative and less than terminationGracePeriodSeconds ({grace})"
        elif not zero_ok and not 0 < seconds <= grace:
            msg = (f"must be greater than 0 and less than terminationGracePeriodSeconds "
                   f"({grace}). Enable AllowPodLifecycleSleepActionZeroValue feature gate for "
                   "zero sleep.")
        else:
            continue
        causes.append(_cause(f"{base}.{hook}.sleep", _invalid_value(seconds, msg)))
    return causes


def validate_object(res: Resource, obj: dict[str, Any], field_validation: str) -> list[str]:
    """Full validation; raises ApiError; returns warnings."""
    name = (obj.get("metadata") or {}).get("name", "")
    causes = name_causes(res, name) if name else [
        _cause("metadata.name", "name or generateName is required", "FieldValueRequired")]
    if causes:
        raise invalid(res, name, causes)
    warnings = schema_check(res, obj, field_validation)
    if field_validation != "Strict":
        strip_unknown(res, obj)
    causes = semantic_causes(res, obj)
    if causes:
        raise invalid(res, name, causes)
    return warnings


__all__ = ["ApiError", "name_causes", "validate_object"]

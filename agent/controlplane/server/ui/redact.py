"""What the dashboard may show of a deployment spec or an event: no secret, no signature.

Environment values are all hidden (any of them may be a password: the spec does
not say which); URIs lose their user info and query values (`redact_uri`), also
inside free text such as event messages, so a signed URL never reaches a page.
"""

from __future__ import annotations

from typing import Any

from agent.logs import redact_uris_in as redact_text

HIDDEN = "********"


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value


def redact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every env value hidden and every URI redacted."""
    shown = redact_value(spec)
    if isinstance(shown.get("env"), dict):
        shown["env"] = dict.fromkeys(shown["env"], HIDDEN)
    return shown

"""Field limits of protocol v1, shared by the reference control plane and the agent's client.

The server refuses a request whose fields exceed these (422) so that one agent
token cannot fill the database with megabyte events; the agent cuts its own
messages and details to them before sending, so that a long error (a build log
tail) still reaches the control plane instead of being refused with the action
it describes.
"""

from __future__ import annotations

import json
from typing import Any

from agent.model import ActionResult, Event, bounded

#: longest `message` of an event, a result or a heartbeat entry (characters)
MAX_MESSAGE_CHARS = 16_384
#: largest `details` object of an event or a result, JSON-encoded (bytes)
MAX_DETAILS_BYTES = 65_536
#: longest URL (prediction URL) and image reference
MAX_URL_CHARS = 2_048
#: longest id (agent, model, deployment, event) or short label (agent version, plugin)
MAX_ID_CHARS = 253
#: most deployments (and orphans) one heartbeat may list
MAX_LISTED_DEPLOYMENTS = 10_000


def details_size(details: dict[str, Any]) -> int:
    """How many bytes `details` takes on the wire (JSON, UTF-8)."""
    return len(json.dumps(details, default=str).encode())


def check_details(details: dict[str, Any]) -> dict[str, Any]:
    """Pydantic validator of a `details` field on the server."""
    size = details_size(details)
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"details take {size} bytes as JSON; at most {MAX_DETAILS_BYTES}")
    return details


def _fit_details(details: dict[str, Any]) -> dict[str, Any]:
    size = details_size(details)
    if size <= MAX_DETAILS_BYTES:
        return details
    return {"truncated": f"details of {size} bytes left out (limit {MAX_DETAILS_BYTES})"}


def fit_event(event: Event) -> Event:
    """`event` cut to the protocol's limits (a copy when anything was cut)."""
    message = bounded(event.message, MAX_MESSAGE_CHARS)
    details = _fit_details(event.details)
    if message is event.message and details is event.details:
        return event
    return event.model_copy(update={"message": message, "details": details})


def fit_result(result: ActionResult) -> ActionResult:
    """`result` with its message and details cut to the protocol's limits."""
    data = result.data
    message = bounded(data.message, MAX_MESSAGE_CHARS) if data.message else data.message
    details = _fit_details(data.details)
    if message is data.message and details is data.details:
        return result
    return result.model_copy(
        update={"data": data.model_copy(update={"message": message, "details": details})})

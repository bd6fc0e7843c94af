"""What a registry's refusal means, in words that say what to fix."""

from __future__ import annotations

import json

from agent.errors import RegistryError
from agent.retry import is_transient_status


def _detail(body: bytes) -> str:
    """The distribution API's `errors` (code: message), if the body holds them."""
    try:
        errors = dict(json.loads(body or b"{}")).get("errors") or []
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors[:3])
    except (ValueError, TypeError, AttributeError):  # not the distribution's error JSON
        return ""


def refusal(host: str, code: int, body: bytes, what: str, *,
            login_configured: bool) -> RegistryError:
    """The RegistryError for answer `code` (with `body`, at most a few KiB) to `what`."""
    detail = _detail(body)
    suffix = f" [{detail}]" if detail else ""
    if code == 401 and not login_configured:
        return RegistryError(
            f"{what}: registry {host} asks for a login (401) and none is configured "
            "for it: a login goes only to the hosts it is bound to "
            f"(images.credentials.hosts, images.base_credentials.hosts){suffix}")
    if code == 401:
        return RegistryError(f"{what}: registry {host} refused the login (401): check the "
                             f"credentials for {host}{suffix}")
    if code == 403:
        return RegistryError(f"{what}: registry {host} denied access (403): the credentials "
                             f"for {host} lack the needed pull/push permission{suffix}")
    error = RegistryError(f"{what}: registry {host} answered {code}{suffix}")
    error.transient = is_transient_status(code)
    return error

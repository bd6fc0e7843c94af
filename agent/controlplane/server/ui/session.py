"""Dashboard sessions: a signed, HttpOnly, SameSite=Strict cookie and a CSRF token per session.

The cookie is signed with a key derived from the admin and read-only tokens
(itsdangerous), so rotating either logs every browser out and the server keeps
no session table (so a logout deletes the cookie in the browser but cannot
revoke a copy of it before it expires: rotate a token for that). The cookie
holds the role ('admin' or 'read') and the session's CSRF token, which every
form sends back in a hidden field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "mgmt_cp_ui"
MAX_AGE = 8 * 3600  # seconds a login lasts


def _serializer(request: Request) -> URLSafeTimedSerializer:
    config = request.app.state.config
    admin: str = config.admin_token
    read: str = getattr(config, "read_token", None) or ""
    # both tokens key the signature: rotating either one logs every browser out
    key = hmac.new(admin.encode(), b"management-agent dashboard session:" + read.encode(),
                   hashlib.sha256)
    return URLSafeTimedSerializer(key.hexdigest(), salt="ui-session")


def role_for_token(request: Request, token: str) -> str | None:
    """'admin' for the admin token, 'read' for the read-only token (if configured)."""
    config = request.app.state.config
    if token and hmac.compare_digest(token.encode(), config.admin_token.encode()):
        return "admin"
    read: str | None = getattr(config, "read_token", None)
    if read and token and hmac.compare_digest(token.encode(), read.encode()):
        return "read"
    return None


def new_session(request: Request, role: str) -> str:
    return str(_serializer(request).dumps({"role": role, "csrf": secrets.token_urlsafe(24)}))


def session(request: Request) -> dict[str, Any] | None:
    """The valid session of this request, or None (no cookie, bad signature, expired)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie:
        return None
    try:
        data = _serializer(request).loads(cookie, max_age=MAX_AGE)
    except BadSignature:
        return None
    return data if isinstance(data, dict) and data.get("role") in ("admin", "read") else None


def csrf_ok(current: dict[str, Any], sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(str(current.get("csrf", "")).encode(),
                                              str(sent).encode())

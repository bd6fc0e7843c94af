"""What the routes depend on: the server's configuration, the error they raise, and
the bearer-token checks (FastAPI dependencies) of the agent and admin APIs.

Kept apart from `app` so that the route modules import it and `app` imports the
route modules, without a cycle.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agent.controlplane.server.bodylimit import DEFAULT_MAX_BODY_BYTES
from agent.controlplane.server.store import Store


@dataclass
class ServerConfig:
    """What `control-plane serve` configures."""

    db_path: Path | str  # a SQLite file, or a sqlite:/// or postgresql:// URL
    admin_token: str
    lease_seconds: int = 120
    read_token: str | None = None  # dashboard login with read-only pages (no forms)
    long_poll_interval: float = 0.25
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get 413
    # POST .../actions:raw (unvalidated actions, to test agents' defences); off in production
    test_endpoints: bool = False
    clock: Callable[[], float] = field(default=time.time, repr=False)


class ApiError(Exception):
    """An error answer raised by a route or an auth dependency."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def validation_detail(errors: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """Readable one-line summary ('replicas: Input should be ...') and JSON-safe error list."""
    clean: list[dict[str, Any]] = []
    lines: list[str] = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path"):
            where = loc[0]
            loc = loc[1:]
        else:
            where = "body"
        name = ".".join(loc) or where
        lines.append(f"{name}: {error.get('msg', 'invalid')}")
        clean.append({"loc": [where, *loc], "msg": error.get("msg"), "type": error.get("type")})
    return "; ".join(lines), clean


bearer_scheme = HTTPBearer(
    auto_error=False, description="The environment's agent token (agent API) or the admin token "
    "(admin API)."
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer ...)")
    return credentials.credentials.strip()


def _is_admin(request: Request, token: str) -> bool:
    config: ServerConfig = request.app.state.config
    return hmac.compare_digest(token.encode(), config.admin_token.encode())


def require_admin(request: Request, credentials: Credentials) -> None:
    """Dependency of admin routes: the admin token, nothing else."""
    token = _bearer(credentials)
    if _is_admin(request, token):
        return
    store: Store = request.app.state.store
    if store.environment_for_token(token) is not None:
        raise ApiError(403, "forbidden", "an agent token cannot use the admin API")
    raise ApiError(401, "unauthorized", "invalid token")


def require_agent(request: Request, env_id: str, credentials: Credentials) -> str:
    """Dependency of agent routes: the token of the environment in the path."""
    token = _bearer(credentials)
    store: Store = request.app.state.store
    owner = store.environment_for_token(token)
    if owner is None:
        if _is_admin(request, token):
            raise ApiError(403, "forbidden", "the admin token cannot act as an agent")
        raise ApiError(401, "unauthorized", "invalid token")
    if owner != env_id:
        raise ApiError(403, "forbidden", f"the token is not for environment {env_id!r}")
    return env_id

"""The reference control plane's HTTP API (protocol v1): FastAPI app factory, auth and errors.

Routes live in `agent_api` (what agents call, per-environment token) and
`admin_api` (what people and tools call, admin token). Every error answer is
`{"error": code, "detail": text}`; see docs/control-plane-protocol.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.controlplane.server.store import Store, StoreError

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Native control-plane protocol v1 of management-agent, served by the reference
control plane (`management-agent control-plane serve`).

* **agent** endpoints take the environment's agent token
  (`Authorization: Bearer <token>`, returned once by environment creation);
* **admin** endpoints take the admin token.

Delivery is at-least-once with leases; see docs/control-plane-protocol.md.
"""


@dataclass
class ServerConfig:
    """What `control-plane serve` configures."""

    db_path: Path | str  # a SQLite file, or a sqlite:/// or postgresql:// URL
    admin_token: str
    lease_seconds: int = 120
    long_poll_interval: float = 0.25
    clock: Callable[[], float] = field(default=time.time, repr=False)


class ApiError(Exception):
    """An error answer raised by a route or an auth dependency."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


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


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI application over the database `config.db_path` (SQLite file or URL)."""
    from agent.controlplane.server import admin_api, agent_api

    app = FastAPI(
        title="management-agent control plane",
        version=__version__,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.config = config
    app.state.store = Store(config.db_path, clock=config.clock)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail)

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = validation_detail(list(exc.errors()))
        return error_response(422, "invalid_request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal server error; see the server log")

    @app.get(f"{API_PREFIX}/healthz", tags=["meta"], summary="Liveness/readiness (no auth)")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__, "protocol": "v1"}

    app.include_router(agent_api.router, prefix=API_PREFIX)
    app.include_router(admin_api.router, prefix=f"{API_PREFIX}/admin")
    return app

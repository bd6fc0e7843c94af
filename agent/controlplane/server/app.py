"""The reference control plane's HTTP API (protocol v1): FastAPI app factory and errors.

Routes live in `agent_api` (what agents call, per-environment token) and
`admin_api` (what people and tools call, admin token); what they depend on
(configuration, auth, `ApiError`) in `deps`. Every error answer is
`{"error": code, "detail": text}`; see docs/control-plane-protocol.md.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.controlplane.server import admin_api, agent_api, test_api
from agent.controlplane.server.bodylimit import BodyLimit
from agent.controlplane.server.deps import ApiError, ServerConfig, validation_detail
from agent.controlplane.server.store import Store, StoreError

__all__ = ["ApiError", "ServerConfig", "create_app", "error_response"]

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


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI application over the database `config.db_path` (SQLite file or URL)."""
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
    if config.test_endpoints:
        log.warning("test endpoints enabled (actions:raw): never do this in production")
        app.include_router(test_api.router, prefix=f"{API_PREFIX}/admin")
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    from agent.controlplane.server.ui import mount

    mount(app)  # the dashboard under /ui
    return app

"""The web dashboard of the reference control plane, served under `/ui` by `control-plane serve`.

`mount(app)` adds the pages and the redirect to the login page; see
docs/dashboard.md. Jinja2 and itsdangerous are imported only here, by the server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse

from agent.controlplane.server.ui.views import LoginRequired, router

__all__ = ["mount"]


def mount(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(_: Request, __: LoginRequired) -> RedirectResponse:
        return RedirectResponse("/ui/login", status_code=303)

    app.include_router(router)

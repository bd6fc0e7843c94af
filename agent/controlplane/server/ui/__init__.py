"""The web dashboard of the reference control plane, served under `/ui` by `control-plane serve`.

`mount(app)` adds the pages and the redirect to the login page; see
docs/dashboard.md. Jinja2 and itsdangerous are imported only here, by the server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse

from agent.controlplane.server.ui.views import FORM_LIMIT, FormTooLarge, LoginRequired, router

__all__ = ["mount"]


def mount(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(_: Request, __: LoginRequired) -> RedirectResponse:
        return RedirectResponse("/ui/login", status_code=303)

    @app.exception_handler(FormTooLarge)
    async def _too_large(_: Request, __: FormTooLarge) -> PlainTextResponse:
        return PlainTextResponse(f"form larger than {FORM_LIMIT} bytes", status_code=413)

    app.include_router(router)

"""The dashboard's pages (`/ui`): server-rendered Jinja2 templates over the same `Store`
the admin API uses, so what a page shows is what the API answers.

Every page needs a session (see `session`); the forms that change something
need the admin role and the session's CSRF token. Pages redact specs and event
texts (`redact`) before rendering.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from agent.controlplane.server.deps import validation_detail
from agent.controlplane.server.store import Store, StoreError
from agent.controlplane.server.ui import session as sessions
from agent.controlplane.server.ui.redact import redact_spec, redact_text
from agent.model import DeploymentSpec

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters["redact"] = redact_text


class LoginRequired(Exception):
    """No valid session: the app answers with a redirect to the login page."""


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _session(request: Request) -> dict[str, Any]:
    current = sessions.session(request)
    if current is None:
        raise LoginRequired
    return current


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    seconds = int(time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
    if seconds < 120:
        return f"{max(0, seconds)} s ago"
    return f"{seconds // 60} min ago" if seconds < 7200 else f"{seconds // 3600} h ago"


def _page(request: Request, name: str, current: dict[str, Any] | None, status: int = 200,
          **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, name, {"session": current, "age": _age, **context}, status_code=status)


class FormTooLarge(Exception):
    """A form body above FORM_LIMIT bytes or 50 fields (the login form is reachable without a
    session, so it must not buffer whatever is sent)."""


FORM_LIMIT = 16 * 1024


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            raise FormTooLarge
    try:
        fields = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=50)
    except ValueError as exc:  # more fields than any form of the dashboard has
        raise FormTooLarge from exc
    return {key: values[-1].strip() for key, values in fields.items()}


# -- login ---------------------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", None)


@router.post("/login")
async def login(request: Request) -> Response:
    role = sessions.role_for_token(request, (await _form(request)).get("token", ""))
    if role is None:
        return _page(request, "login.html", None, status=401,
                     error="That token is not valid for this control plane.")
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(sessions.COOKIE, sessions.new_session(request, role),
                        max_age=sessions.MAX_AGE, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    current = _session(request)
    if not sessions.csrf_ok(current, (await _form(request)).get("csrf")):
        return _page(request, "error.html", current, status=403, error="invalid form token")
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/ui")
    return response


# -- pages ---------------------------------------------------------------------------------------


@router.get("")
def environments(request: Request) -> HTMLResponse:
    current = _session(request)
    store = _store(request)
    rows = []
    for env in store.list_environments():
        beat = env.get("last_heartbeat") or {}
        known = {dep["id"] for dep in store.list_deployments(env["id"])}
        reported = [d.get("deployment_id") for d in beat.get("deployments", [])]
        rows.append({**env, "agent_version": beat.get("agent_version"),
                     "plugin": beat.get("plugin"), "health": beat.get("status", "unknown"),
                     "orphans": [dep for dep in reported if dep not in known]})
    return _page(request, "environments.html", current, environments=rows)


@router.get("/environments/{env_id}")
def deployments(request: Request, env_id: str, state: str = "", q: str = "") -> HTMLResponse:
    current = _session(request)
    store = _store(request)
    env = store.get_environment(env_id)
    rows = store.list_deployments(env_id)
    states = sorted({row["state"] for row in rows})
    shown = [row for row in rows if (not state or row["state"] == state)
             and (not q or q.lower() in (row["id"] + " " + str(row["current_model_id"])).lower())]
    return _page(request, "deployments.html", current, env=env, deployments=shown,
                 states=states, state=state, q=q)


def _deployment_context(store: Store, env_id: str, dep_id: str) -> dict[str, Any]:
    dep = store.get_deployment(env_id, dep_id)
    actions = store.list_actions(env_id, deployment_id=dep_id, limit=50)
    good = next((a["result"] for a in actions if a.get("result")
                 and a["result"].get("status") == "passing"
                 and a["result"].get("state") == "ready"), None)
    last = dep.get("last_result") or {}
    return {
        "dep": dep, "spec": redact_spec(dep["spec"]), "actions": actions,
        "events": list(reversed(store.events(env_id, deployment_id=dep_id, limit=200))),
        "last_good_model": ((good or {}).get("data") or {}).get("currentModelId"),
        "old_model_in_use": (last.get("data") or {}).get("oldModelInUse"),
        "running": any(a["state"] != "completed" for a in actions),
    }


@router.get("/environments/{env_id}/deployments/{dep_id}")
def deployment(request: Request, env_id: str, dep_id: str, error: str = "") -> HTMLResponse:
    current = _session(request)
    context = _deployment_context(_store(request), env_id, dep_id)
    return _page(request, "deployment.html", current, env_id=env_id, error=error, **context)


@router.get("/environments/{env_id}/deployments/{dep_id}/live")
def deployment_live(request: Request, env_id: str, dep_id: str) -> HTMLResponse:
    """The state and timeline parts of the deployment page, polled while an action runs."""
    current = _session(request)
    context = _deployment_context(_store(request), env_id, dep_id)
    return _page(request, "_live.html", current, env_id=env_id, **context)


# -- forms ---------------------------------------------------------------------------------------


async def _admin_form(request: Request) -> tuple[dict[str, Any], dict[str, str]] | Response:
    current = _session(request)
    form = await _form(request)
    if current["role"] != "admin":
        return _page(request, "error.html", current, status=403,
                     error="read-only session: log in with the admin token to change anything")
    if not sessions.csrf_ok(current, form.get("csrf")):
        return _page(request, "error.html", current, status=403,
                     error="invalid or missing form token; reload the page and try again")
    return current, form


def _model(form: dict[str, str]) -> dict[str, str]:
    fields = {"id": form.get("model_id"), "uri": form.get("model_uri"),
              "image": form.get("image")}
    return {key: value for key, value in fields.items() if value}


def _back(env_id: str, dep_id: str, error: str = "") -> RedirectResponse:
    url = f"/ui/environments/{quote(env_id)}/deployments/{quote(dep_id)}"
    return RedirectResponse(url + (f"?error={quote(error)}" if error else ""), status_code=303)


@router.post("/environments/{env_id}/deploy")
async def deploy(request: Request, env_id: str) -> Response:
    checked = await _admin_form(request)
    if isinstance(checked, Response):
        return checked
    current, form = checked
    spec: dict[str, Any] = {"id": form.get("deployment_id", ""), "model": _model(form)}
    if form.get("replicas"):
        spec["replicas"] = form["replicas"]
    try:
        valid = DeploymentSpec.model_validate(spec)
        _store(request).create_deployment(env_id, valid.model_dump(mode="json", exclude_none=True))
    except ValidationError as exc:
        detail, _ = validation_detail(list(exc.errors()))
        return _page(request, "error.html", current, status=422, error=detail)
    except StoreError as exc:
        return _page(request, "error.html", current, status=exc.status, error=exc.detail)
    return _back(env_id, valid.id)


@router.post("/environments/{env_id}/deployments/{dep_id}/{operation}")
async def operate(request: Request, env_id: str, dep_id: str, operation: str) -> Response:
    checked = await _admin_form(request)
    if isinstance(checked, Response):
        return checked
    _, form = checked
    store = _store(request)
    try:
        if operation == "replace":
            spec, _ = store.get_deployment_spec(env_id, dep_id)
            spec["model"] = _model(form)
            valid = DeploymentSpec.model_validate(spec).model_dump(mode="json", exclude_none=True)
            store.enqueue_deployment_action(env_id, dep_id, "deployment_replace_model",
                                            spec=valid, require_running=True)
        elif operation in ("stop", "relaunch"):
            store.enqueue_deployment_action(
                env_id, dep_id, f"deployment_{operation}",
                desired="stopped" if operation == "stop" else "running")
        else:
            return _back(env_id, dep_id, f"unknown operation {operation!r}")
    except ValidationError as exc:
        return _back(env_id, dep_id, validation_detail(list(exc.errors()))[0])
    except StoreError as exc:
        return _back(env_id, dep_id, exc.detail)
    return _back(env_id, dep_id)

"""Admin endpoints: environments, deployments (deploy/replace/stop/relaunch/status), history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from agent.controlplane.server.deps import ApiError, require_admin, validation_detail
from agent.controlplane.server.schemas import (
    ActionView,
    DeploymentAccepted,
    DeploymentView,
    EnvironmentCreate,
    EnvironmentCreated,
    EnvironmentView,
    ErrorBody,
    EventView,
    ReplaceRequest,
    TokenView,
)
from agent.controlplane.server.store import Store
from agent.model import DeploymentSpec

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=ERRORS)

Limit = Annotated[int, Query(ge=1, le=10000)]
After = Annotated[int | None, Query(ge=0, description="Only events with a higher seq (to follow)")]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _accepted(store: Store, env_id: str, action: dict[str, Any]) -> dict[str, Any]:
    return {"deployment": store.get_deployment(env_id, action["deployment_id"]), "action": action}


@router.post("/environments", status_code=201, response_model=EnvironmentCreated,
             summary="Create an environment; the answer holds its agent token (shown once)")
def create_environment(request: Request, body: EnvironmentCreate) -> dict[str, Any]:
    environment, token = _store(request).create_environment(body.id, body.name)
    return {**environment, "token": token}


@router.get("/environments", response_model=list[EnvironmentView], summary="List environments")
def list_environments(request: Request) -> list[dict[str, Any]]:
    return _store(request).list_environments()


@router.get("/environments/{env_id}", response_model=EnvironmentView,
            summary="One environment, with its last heartbeat")
def get_environment(request: Request, env_id: str) -> dict[str, Any]:
    return _store(request).get_environment(env_id)


@router.post("/environments/{env_id}/token:rotate", response_model=TokenView,
             summary="Replace the agent token (the old one stops working at once)")
def rotate_token(request: Request, env_id: str) -> dict[str, Any]:
    return {"environment_id": env_id, "token": _store(request).rotate_token(env_id)}


@router.post("/environments/{env_id}:status", status_code=202, response_model=ActionView,
             summary="Enqueue an environment_status action")
def request_environment_status(request: Request, env_id: str) -> dict[str, Any]:
    return _store(request).enqueue_environment_status(env_id)


@router.post("/environments/{env_id}/deployments", status_code=202,
             response_model=DeploymentAccepted,
             summary="Create a deployment (or re-create a stopped one) and enqueue its start")
def deploy(request: Request, env_id: str, spec: DeploymentSpec) -> dict[str, Any]:
    store = _store(request)
    action = store.create_deployment(env_id, spec.model_dump(mode="json", exclude_none=True))
    return _accepted(store, env_id, action)


@router.get("/environments/{env_id}/deployments", response_model=list[DeploymentView],
            summary="Deployments with their latest known state")
def list_deployments(request: Request, env_id: str) -> list[dict[str, Any]]:
    return _store(request).list_deployments(env_id)


@router.get("/environments/{env_id}/deployments/{dep_id}", response_model=DeploymentView,
            summary="One deployment: spec, desired and observed state, last result")
def get_deployment(request: Request, env_id: str, dep_id: str) -> dict[str, Any]:
    return _store(request).get_deployment(env_id, dep_id)


@router.post("/environments/{env_id}/deployments/{dep_id}:replace", status_code=202,
             response_model=DeploymentAccepted,
             summary="Replace the model (and optionally other settings); enqueue the replacement")
def replace_model(
    request: Request, env_id: str, dep_id: str, body: ReplaceRequest
) -> dict[str, Any]:
    store = _store(request)
    spec, _ = store.get_deployment_spec(env_id, dep_id)
    spec.update(body.model_dump(mode="json", exclude_none=True))
    try:
        valid = DeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        detail, _errors = validation_detail(list(exc.errors()))
        raise ApiError(422, "invalid_request", detail) from exc
    action = store.enqueue_deployment_action(
        env_id, dep_id, "deployment_replace_model",
        spec=valid.model_dump(mode="json", exclude_none=True), require_running=True,
    )
    return _accepted(store, env_id, action)


@router.post("/environments/{env_id}/deployments/{dep_id}:stop", status_code=202,
             response_model=DeploymentAccepted, summary="Enqueue a stop")
def stop(request: Request, env_id: str, dep_id: str) -> dict[str, Any]:
    store = _store(request)
    action = store.enqueue_deployment_action(env_id, dep_id, "deployment_stop", desired="stopped")
    return _accepted(store, env_id, action)


@router.post("/environments/{env_id}/deployments/{dep_id}:relaunch", status_code=202,
             response_model=DeploymentAccepted,
             summary="Enqueue a relaunch with the stored spec (also restarts a stopped one)")
def relaunch(request: Request, env_id: str, dep_id: str) -> dict[str, Any]:
    store = _store(request)
    action = store.enqueue_deployment_action(
        env_id, dep_id, "deployment_relaunch", desired="running"
    )
    return _accepted(store, env_id, action)


@router.post("/environments/{env_id}/deployments/{dep_id}:status", status_code=202,
             response_model=DeploymentAccepted, summary="Enqueue a deployment_status action")
def request_status(request: Request, env_id: str, dep_id: str) -> dict[str, Any]:
    store = _store(request)
    action = store.enqueue_deployment_action(env_id, dep_id, "deployment_status")
    return _accepted(store, env_id, action)


@router.get("/environments/{env_id}/deployments/{dep_id}/events",
            response_model=list[EventView], summary="Event history of a deployment, oldest first")
def deployment_events(request: Request, env_id: str, dep_id: str, limit: Limit = 200,
                      after: After = None) -> list[dict[str, Any]]:
    store = _store(request)
    store.get_deployment_spec(env_id, dep_id)  # 404 for an unknown deployment
    return store.events(env_id, deployment_id=dep_id, limit=limit, after=after)


@router.get("/environments/{env_id}/events", response_model=list[EventView],
            summary="Event history of an environment (optionally of one action), oldest first")
def environment_events(
    request: Request, env_id: str, limit: Limit = 200, action_id: str | None = None,
    after: After = None,
) -> list[dict[str, Any]]:
    return _store(request).events(env_id, action_id=action_id, limit=limit, after=after)


@router.get("/environments/{env_id}/actions", response_model=list[ActionView],
            summary="Actions, newest first")
def list_actions(
    request: Request, env_id: str, limit: Limit = 100, deployment_id: str | None = None
) -> list[dict[str, Any]]:
    return _store(request).list_actions(env_id, deployment_id=deployment_id, limit=limit)


@router.get("/environments/{env_id}/actions/{action_id}", response_model=ActionView,
            summary="One action with its lease and result")
def get_action(request: Request, env_id: str, action_id: str) -> dict[str, Any]:
    return _store(request).get_action(env_id, action_id)

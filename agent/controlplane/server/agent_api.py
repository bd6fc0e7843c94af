"""Agent endpoints of protocol v1: list, claim, renew, release, events, complete, heartbeat."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from agent.controlplane.server.deps import ServerConfig, require_agent
from agent.controlplane.server.schemas import (
    ClaimedAction,
    ClaimRequest,
    CompletedAction,
    CompleteRequest,
    ErrorBody,
    EventRequest,
    ExpectedDeployments,
    HeartbeatAck,
    HeartbeatRequest,
    Lease,
    PendingActions,
    ReleaseRequest,
    RenewRequest,
)
from agent.controlplane.server.store import Store

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422)
}

router = APIRouter(tags=["agent"], responses=ERRORS)

AgentEnv = Annotated[str, Depends(require_agent)]


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _lease_seconds(request: Request, asked: int | None) -> int:
    config: ServerConfig = request.app.state.config
    return asked if asked is not None else config.lease_seconds


def _lease(action: dict[str, Any]) -> Lease:
    return Lease(
        action_id=action["id"], state=action["state"], lease_owner=action["lease_owner"],
        lease_expires_at=action["lease_expires_at"],
    )


@router.get(
    "/environments/{env_id}/actions",
    response_model=PendingActions,
    summary="Deliverable actions, oldest first (long poll with ?wait=SECONDS)",
)
async def list_pending(
    request: Request,
    env_id: AgentEnv,
    wait: Annotated[float, Query(ge=0, le=60, description="Wait up to this long for one.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    store = _store(request)
    config: ServerConfig = request.app.state.config
    deadline = time.monotonic() + wait
    while True:
        actions = await run_in_threadpool(store.pending, env_id, limit)
        remaining = deadline - time.monotonic()
        if actions or remaining <= 0 or await request.is_disconnected():
            return {"actions": actions}
        await asyncio.sleep(min(config.long_poll_interval, remaining))


@router.post(
    "/environments/{env_id}/actions/{action_id}/claim",
    response_model=ClaimedAction,
    summary="Take the lease; returns the action (409 when leased by another or blocked)",
)
def claim(request: Request, env_id: AgentEnv, action_id: str, body: ClaimRequest) -> JSONResponse:
    payload = _store(request).claim(
        env_id, action_id, body.agent_id, _lease_seconds(request, body.lease_seconds)
    )
    # Returned as stored: a raw (test) action may not match the schema, and the agent
    # must see exactly that to reject it.
    return JSONResponse(payload)


@router.post(
    "/environments/{env_id}/actions/{action_id}/renew",
    response_model=Lease,
    summary="Extend the lease (latest claimant only)",
)
def renew(request: Request, env_id: AgentEnv, action_id: str, body: RenewRequest) -> Lease:
    action = _store(request).renew(
        env_id, action_id, body.agent_id, _lease_seconds(request, body.lease_seconds)
    )
    return _lease(action)


@router.post(
    "/environments/{env_id}/actions/{action_id}/release",
    response_model=Lease,
    summary="Give the lease back unfinished; the action is deliverable again at once",
)
def release(request: Request, env_id: AgentEnv, action_id: str, body: ReleaseRequest) -> Lease:
    return _lease(_store(request).release(env_id, action_id, body.agent_id))


@router.post(
    "/environments/{env_id}/actions/{action_id}/events",
    status_code=204,
    response_class=Response,
    summary="Append a progress event (a repeated event_id is stored once)",
)
def add_event(request: Request, env_id: AgentEnv, action_id: str, body: EventRequest) -> Response:
    _store(request).add_event(
        env_id, action_id, body.event.model_dump(mode="json"), body.agent_id, body.event_id
    )
    return Response(status_code=204)


@router.post(
    "/environments/{env_id}/actions/{action_id}/complete",
    response_model=CompletedAction,
    summary="Finish with a result (a repeat by the same agent returns the stored result)",
)
def complete(
    request: Request, env_id: AgentEnv, action_id: str, body: CompleteRequest
) -> dict[str, Any]:
    action, duplicate = _store(request).complete(
        env_id, action_id, body.agent_id, body.result.model_dump(mode="json", by_alias=True)
    )
    return {"action": action, "duplicate": duplicate}


@router.put(
    "/environments/{env_id}/heartbeat",
    response_model=HeartbeatAck,
    summary="Report the environment's status (agent version, plugin, deployments, orphans)",
)
def heartbeat(request: Request, env_id: AgentEnv, body: HeartbeatRequest) -> dict[str, Any]:
    received = _store(request).heartbeat(
        env_id, body.agent_id, body.status.model_dump(mode="json", by_alias=True)
    )
    return {"received_at": received}


@router.get(
    "/environments/{env_id}/deployments",
    response_model=ExpectedDeployments,
    summary="Deployment ids the control plane expects here (for orphan detection)",
)
def expected_deployments(request: Request, env_id: AgentEnv) -> dict[str, Any]:
    return {"deployment_ids": _store(request).expected_deployment_ids(env_id)}

"""Endpoints for testing agents, mounted only with `serve --enable-test-endpoints`.

`actions:raw` stores an action exactly as given, so that tests can check that
agents reject malformed actions. It bypasses every check of the normal admin
endpoints, so a production server must not offer it: `ServerConfig.test_endpoints`
is off by default, and then the route does not exist (404, not in the OpenAPI
document).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request

from agent.controlplane.server.admin_api import ERRORS
from agent.controlplane.server.deps import require_admin
from agent.controlplane.server.schemas import ActionView
from agent.controlplane.server.store import Store

router = APIRouter(tags=["admin (tests only)"], dependencies=[Depends(require_admin)],
                   responses=ERRORS)


@router.post("/environments/{env_id}/actions:raw", status_code=201, response_model=ActionView,
             summary="FOR TESTS ONLY: enqueue an action payload as given, unvalidated")
def enqueue_raw(
    request: Request, env_id: str, payload: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Stores the JSON object as the action's payload (`type`, `deployment_id`,
    `deployment`, ...); `id`, `environment_id`, `created_at` and `attempt` are set
    by the server."""
    store: Store = request.app.state.store
    return store.enqueue_raw(env_id, payload)

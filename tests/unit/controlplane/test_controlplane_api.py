"""Semantics of protocol v1 on the reference control plane, through FastAPI's TestClient.

The app runs in-process over a real SQLite file; only the clock is a fake so
that lease expiry needs no sleeping.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from agent.controlplane.server.app import ServerConfig, create_app
from agent.model import Action

ADMIN = "admin-secret"
SPEC = {"id": "d1", "model": {"id": "m1", "uri": "s3://bucket/m1"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Api:
    """A TestClient with the admin token and one environment ('prod') ready."""

    def __init__(self, db: Path, clock: Clock, test_endpoints: bool = False) -> None:
        self.db = db
        self.clock = clock
        self.client = TestClient(create_app(ServerConfig(db, ADMIN, clock=clock,
                                                         test_endpoints=test_endpoints)))
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.token = ""

    def create_env(self, env_id: str) -> str:
        response = self.client.post("/api/v1/admin/environments", json={"id": env_id},
                                    headers=self.admin)
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def agent(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def admin_post(self, path: str, body: Any = None) -> Any:
        return self.client.post(f"/api/v1/admin/environments/prod{path}", json=body,
                                headers=self.admin)

    def deploy(self, spec: dict[str, Any] | None = None) -> str:
        response = self.admin_post("/deployments", spec or SPEC)
        assert response.status_code == 202, response.text
        return str(response.json()["action"]["id"])

    def pending(self, **params: Any) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/environments/prod/actions", params=params,
                                   headers=self.agent())
        assert response.status_code == 200, response.text
        return list(response.json()["actions"])

    def act(self, action_id: str, verb: str, body: dict[str, Any]) -> Any:
        return self.client.post(f"/api/v1/environments/prod/actions/{action_id}/{verb}",
                                json=body, headers=self.agent())

    def claim(self, action_id: str, agent: str = "agent-1", lease: int = 60) -> Any:
        return self.act(action_id, "claim", {"agent_id": agent, "lease_seconds": lease})

    def complete(self, action_id: str, agent: str = "agent-1", status: str = "passing") -> Any:
        result = {"status": status, "state": "ready",
                  "data": {"predictionUrl": "http://x/d1/predict", "currentModelId": "m1"}}
        return self.act(action_id, "complete", {"agent_id": agent, "result": result})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    api = Api(tmp_path / "cp.db", Clock())
    api.token = api.create_env("prod")
    yield api
    api.client.close()


# -- auth ----------------------------------------------------------------------------------------


def test_missing_or_wrong_token_is_401_with_json_error(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = api.client.get("/api/v1/environments/prod/actions", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert api.client.get("/api/v1/admin/environments").status_code == 401


def test_token_of_another_environment_is_403(api: Api) -> None:
    other = api.create_env("staging")
    response = api.client.get("/api/v1/environments/prod/actions", headers=api.agent(other))
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden",
                               "detail": "the token is not for environment 'prod'"}


def test_agent_token_cannot_use_admin_api_and_admin_cannot_act_as_agent(api: Api) -> None:
    assert api.client.get("/api/v1/admin/environments", headers=api.agent()).status_code == 403
    response = api.client.get("/api/v1/environments/prod/actions", headers=api.admin)
    assert response.status_code == 403


def test_rotated_token_replaces_the_old_one(api: Api) -> None:
    response = api.admin_post("/token:rotate")
    assert response.status_code == 200
    new = response.json()["token"]
    assert api.client.get("/api/v1/environments/prod/actions",
                          headers=api.agent()).status_code == 401
    assert api.client.get("/api/v1/environments/prod/actions",
                          headers=api.agent(new)).status_code == 200


def test_tokens_are_stored_only_as_hashes(api: Api) -> None:
    assert api.token.encode() not in api.db.read_bytes()
    wal = api.db.with_name(api.db.name + "-wal")
    if wal.exists():
        assert api.token.encode() not in wal.read_bytes()


# -- validation and errors -----------------------------------------------------------------------


def test_invalid_deployment_spec_is_422_with_readable_detail(api: Api) -> None:
    response = api.admin_post("/deployments", {"id": "d1", "replicas": -1,
                                               "model": {"id": "m1", "uri": "s3://b/k"}})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["detail"] == "replicas: Input should be greater than or equal to 0"
    assert body["errors"][0]["loc"] == ["body", "replicas"]


def test_replace_validates_the_merged_spec(api: Api) -> None:
    api.deploy()
    response = api.admin_post("/deployments/d1:replace", {"model": {"id": "m2", "uri": "nope"}})
    assert response.status_code == 422
    assert "model.uri" in response.json()["detail"]


def test_unknown_things_are_404(api: Api) -> None:
    assert api.claim("a-999").status_code == 404
    assert api.client.get("/api/v1/admin/environments/nope", headers=api.admin).status_code == 404
    response = api.admin_post("/deployments/ghost:stop")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_duplicate_environment_and_deployment_are_409(api: Api) -> None:
    response = api.client.post("/api/v1/admin/environments", json={"id": "prod"},
                               headers=api.admin)
    assert response.status_code == 409
    api.deploy()
    assert api.admin_post("/deployments", SPEC).json()["error"] == "already_exists"


# -- delivery ------------------------------------------------------------------------------------


def test_claim_returns_a_valid_action_payload(api: Api) -> None:
    action_id = api.deploy({**SPEC, "replicas": 2, "env": {"A": "1"}})
    assert api.pending() == [{"id": action_id, "type": "deployment_start", "deployment_id": "d1"}]
    response = api.claim(action_id)
    assert response.status_code == 200
    action = Action.model_validate(response.json())
    assert action.attempt == 1
    assert action.environment_id == "prod"
    assert action.deployment is not None and action.deployment.replicas == 2
    assert api.pending() == []


def test_second_claimant_gets_409_while_the_lease_is_live(api: Api) -> None:
    action_id = api.deploy()
    assert api.claim(action_id, "agent-1").status_code == 200
    response = api.claim(action_id, "agent-2")
    assert response.status_code == 409
    assert response.json()["error"] == "lease_conflict"


def test_expired_lease_makes_the_action_deliverable_again_with_attempt_plus_one(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id, "agent-1", lease=30)
    api.clock.now += 31
    assert [ref["id"] for ref in api.pending()] == [action_id]
    response = api.claim(action_id, "agent-2")
    assert response.status_code == 200
    assert response.json()["attempt"] == 2
    # the first agent lost its lease: it can neither renew nor complete
    assert api.act(action_id, "renew", {"agent_id": "agent-1"}).status_code == 409
    assert api.complete(action_id, "agent-1").json()["error"] == "lease_lost"
    assert api.complete(action_id, "agent-2").status_code == 200


def test_renew_extends_and_release_redelivers_at_once(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id, lease=30)
    api.clock.now += 20
    response = api.act(action_id, "renew", {"agent_id": "agent-1", "lease_seconds": 30})
    assert response.status_code == 200
    assert response.json()["lease_owner"] == "agent-1"
    api.clock.now += 20  # 40s after the claim, but only 20s after the renewal
    assert api.pending() == []
    assert api.act(action_id, "release", {"agent_id": "agent-2"}).status_code == 409
    assert api.act(action_id, "release", {"agent_id": "agent-1"}).status_code == 200
    assert api.act(action_id, "release", {"agent_id": "agent-1"}).status_code == 200  # idempotent
    assert [ref["id"] for ref in api.pending()] == [action_id]
    assert api.claim(action_id, "agent-2").json()["attempt"] == 2


def test_actions_of_one_deployment_are_delivered_in_order(api: Api) -> None:
    start = api.deploy()
    replace = api.admin_post("/deployments/d1:replace",
                             {"model": {"id": "m2", "uri": "s3://b/m2"}}).json()["action"]["id"]
    other = api.deploy({"id": "d2", "model": {"id": "m9", "image": "reg/x:1"}})
    env_status = api.admin_post(":status").json()["id"]
    assert [ref["id"] for ref in api.pending()] == [start, other, env_status]
    blocked = api.claim(replace)
    assert blocked.status_code == 409
    assert blocked.json()["error"] == "blocked"
    api.claim(start)
    assert replace not in [ref["id"] for ref in api.pending()]
    api.complete(start)
    assert [ref["id"] for ref in api.pending()] == [replace, other, env_status]
    assert api.claim(replace).json()["deployment"]["model"]["id"] == "m2"


def test_complete_is_idempotent_for_the_same_agent(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id)
    first = api.complete(action_id)
    assert first.status_code == 200
    assert first.json()["duplicate"] is False
    again = api.complete(action_id, status="failing")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["action"]["result"]["status"] == "passing"  # the stored result stands
    assert api.complete(action_id, agent="agent-2").status_code == 409
    assert api.claim(action_id).json()["error"] == "already_completed"


def test_complete_without_a_claim_is_409(api: Api) -> None:
    action_id = api.deploy()
    assert api.complete(action_id).json()["error"] == "lease_lost"


def test_long_poll_returns_empty_after_the_wait(api: Api) -> None:
    assert api.pending(wait=0.3) == []
    response = api.client.get("/api/v1/environments/prod/actions", params={"wait": 61},
                              headers=api.agent())
    assert response.status_code == 422


# -- state, history, heartbeat -------------------------------------------------------------------


def test_completed_result_becomes_the_deployment_state(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id)
    api.complete(action_id)
    view = api.client.get("/api/v1/admin/environments/prod/deployments/d1",
                          headers=api.admin).json()
    assert (view["state"], view["status"]) == ("ready", "passing")
    assert view["prediction_url"] == "http://x/d1/predict"
    assert view["source"] == "result"


def test_newer_heartbeat_overrides_the_last_result(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id)
    api.complete(action_id)
    api.clock.now += 5
    status = {"agent_version": "0.1.0", "plugin": "kubernetes", "status": "warning",
              "deployments": [{"deployment_id": "d1", "state": "errored", "status": "failing",
                               "message": "CrashLoopBackOff"}], "orphans": ["old"]}
    response = api.client.put("/api/v1/environments/prod/heartbeat", headers=api.agent(),
                              json={"agent_id": "agent-1", "status": status})
    assert response.status_code == 200
    view = api.client.get("/api/v1/admin/environments/prod/deployments/d1",
                          headers=api.admin).json()
    assert (view["state"], view["source"], view["message"]) == (
        "errored", "heartbeat", "CrashLoopBackOff")
    env = api.client.get("/api/v1/admin/environments/prod", headers=api.admin).json()
    assert env["last_heartbeat"]["orphans"] == ["old"]


def test_events_are_recorded_once_per_event_id(api: Api) -> None:
    action_id = api.deploy()
    api.claim(action_id)
    body = {"agent_id": "agent-1", "event_id": "e-1",
            "event": {"message": "building image", "details": {"step": 1}}}
    assert api.act(action_id, "events", body).status_code == 204
    assert api.act(action_id, "events", body).status_code == 204
    bad = api.act(action_id, "events", {"event": {"message": "x", "level": "loud"}})
    assert bad.status_code == 422
    history = api.client.get("/api/v1/admin/environments/prod/deployments/d1/events",
                             headers=api.admin).json()
    agent_events = [event for event in history if event["source"] == "agent"]
    assert [event["message"] for event in agent_events] == ["building image"]
    assert agent_events[0]["details"] == {"step": 1}


def test_expected_deployment_ids_exclude_finished_stops(api: Api) -> None:
    api.deploy()
    api.deploy({"id": "d2", "model": {"id": "m2", "image": "reg/x:1"}})
    stop = api.admin_post("/deployments/d2:stop").json()["action"]["id"]

    def expected() -> list[str]:
        response = api.client.get("/api/v1/environments/prod/deployments", headers=api.agent())
        return list(response.json()["deployment_ids"])

    assert expected() == ["d1", "d2"]  # d2's stop is not done yet
    while refs := api.pending():  # d2's stop is delivered after d2's start
        for ref in refs:
            api.claim(ref["id"])
            api.complete(ref["id"])
    assert api.client.get(f"/api/v1/admin/environments/prod/actions/{stop}",
                          headers=api.admin).json()["state"] == "completed"
    assert expected() == ["d1"]


def test_raw_actions_are_stored_unvalidated_only_with_test_endpoints(
        api: Api, tmp_path: Path) -> None:
    raw = {"type": "deployment_start", "deployment_id": "d9",
           "deployment": {"id": "d9", "replicas": -3, "model": {"id": "m"}}}
    refused = api.admin_post("/actions:raw", raw)
    assert (refused.status_code, refused.json()["error"]) == (404, "not_found")
    assert "actions:raw" not in str(api.client.get("/openapi.json").json()["paths"])

    testing = Api(tmp_path / "testing.db", api.clock, test_endpoints=True)
    testing.token = testing.create_env("prod")
    response = testing.admin_post("/actions:raw", raw)
    assert response.status_code == 201
    claimed = testing.claim(response.json()["id"]).json()
    assert (claimed["deployment"]["replicas"], claimed["attempt"]) == (-3, 1)
    testing.client.close()


@pytest.mark.parametrize(("verb", "body", "field"), [
    ("events", {"event": {"message": "x" * 16_385}}, "event.message"),
    ("events", {"event": {"message": "m", "details": {"log": "x" * 70_000}}}, "event.details"),
    ("complete", {"result": {"status": "failing", "state": "errored",
                             "data": {"message": "x" * 16_385}}}, "result.data.message"),
    ("complete", {"result": {"status": "passing", "state": "ready",
                             "data": {"predictionUrl": "http://h/" + "p" * 2_100}}},
     "result.data.predictionUrl"),
])
def test_oversized_fields_are_422_naming_the_field(
        api: Api, verb: str, body: dict[str, Any], field: str) -> None:
    action_id = api.deploy()
    api.claim(action_id)
    response = api.act(action_id, verb, {"agent_id": "agent-1", **body})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(f"{field}: ")


def test_heartbeat_fields_are_bounded(api: Api) -> None:
    status = {"agent_version": "1", "plugin": "k", "orphans": ["o"] * 10_001}
    response = api.client.put("/api/v1/environments/prod/heartbeat",
                              json={"agent_id": "a", "status": status}, headers=api.agent())
    assert response.status_code == 422
    assert response.json()["detail"].startswith("status.orphans: ")
    status = {"agent_version": "v" * 300, "plugin": "k"}
    response = api.client.put("/api/v1/environments/prod/heartbeat",
                              json={"agent_id": "a", "status": status}, headers=api.agent())
    assert response.json()["detail"].startswith("status.agent_version: ")



# -- persistence ---------------------------------------------------------------------------------


def test_state_survives_recreating_the_app_on_the_same_file(api: Api) -> None:
    first = api.deploy()
    api.claim(first)
    api.act(first, "events", {"agent_id": "agent-1", "event": {"message": "half way"}})
    second = api.admin_post("/deployments/d1:stop").json()["action"]["id"]
    api.client.close()

    again = Api(api.db, api.clock)
    again.token = api.token
    assert again.claim(first, "agent-2").json()["error"] == "lease_conflict"  # lease kept
    assert again.complete(first).status_code == 200
    assert [ref["id"] for ref in again.pending()] == [second]
    history = again.client.get("/api/v1/admin/environments/prod/deployments/d1/events",
                               headers=again.admin).json()
    assert "half way" in [event["message"] for event in history]
    again.client.close()

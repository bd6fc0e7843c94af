"""A small client of the admin API, used by the `control-plane` CLI and by tests."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests

from agent.errors import ControlPlaneError

FINISHED = "completed"


class AdminApiError(ControlPlaneError):
    """The admin API answered an error; `status` and `code` are the HTTP status and error code."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = status == 0 or status >= 500 or status == 429


class AdminClient:
    """Admin calls over HTTP with the admin token."""

    def __init__(
        self, url: str, token: str | None, timeout: float = 30.0, verify: bool | str = True
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        self.session = requests.Session()
        self._token = token

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, json: Any = None, **params: Any) -> Any:
        """One call; returns the decoded JSON (None for 204); raises AdminApiError."""
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        query = {key: value for key, value in params.items() if value is not None}
        try:
            response = self.session.request(
                method, f"{self.url}/api/v1{path}", json=json, params=query, headers=headers,
                timeout=self.timeout, verify=self.verify,
            )
        except requests.RequestException as exc:
            raise AdminApiError(
                f"cannot reach the control plane at {self.url}: {type(exc).__name__}"
            ) from exc
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            code = body.get("error", "") if isinstance(body, dict) else ""
            detail = body.get("detail", "") if isinstance(body, dict) else response.text[:200]
            raise AdminApiError(
                f"{method} {path}: {response.status_code} {code}: {detail}",
                status=response.status_code, code=code,
            )
        return body

    # -- environments ----------------------------------------------------------------------

    def create_environment(self, env_id: str, name: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/admin/environments", {"id": env_id, "name": name})

    def list_environments(self) -> list[dict[str, Any]]:
        return self.request("GET", "/admin/environments")

    def get_environment(self, env_id: str) -> dict[str, Any]:
        return self.request("GET", f"/admin/environments/{_q(env_id)}")

    def rotate_token(self, env_id: str) -> str:
        body = self.request("POST", f"/admin/environments/{_q(env_id)}/token:rotate")
        return str(body["token"])

    # -- deployments -----------------------------------------------------------------------

    def deploy(self, env_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/admin/environments/{_q(env_id)}/deployments", spec)

    def _dep(self, env_id: str, dep_id: str) -> str:
        return f"/admin/environments/{_q(env_id)}/deployments/{_q(dep_id)}"

    def replace(self, env_id: str, dep_id: str, change: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", self._dep(env_id, dep_id) + ":replace", change)

    def stop(self, env_id: str, dep_id: str) -> dict[str, Any]:
        return self.request("POST", self._dep(env_id, dep_id) + ":stop")

    def relaunch(self, env_id: str, dep_id: str) -> dict[str, Any]:
        return self.request("POST", self._dep(env_id, dep_id) + ":relaunch")

    def request_status(self, env_id: str, dep_id: str | None = None) -> dict[str, Any]:
        """Enqueue deployment_status (or environment_status without a deployment); the action."""
        if dep_id is None:
            return self.request("POST", f"/admin/environments/{_q(env_id)}:status")
        return self.request("POST", self._dep(env_id, dep_id) + ":status")["action"]

    def list_deployments(self, env_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/admin/environments/{_q(env_id)}/deployments")

    def get_deployment(self, env_id: str, dep_id: str) -> dict[str, Any]:
        return self.request("GET", self._dep(env_id, dep_id))

    def events(
        self, env_id: str, dep_id: str | None = None, limit: int = 200,
        action_id: str | None = None, after: int | None = None,
    ) -> list[dict[str, Any]]:
        """Oldest first; `after` (a seq) returns only newer ones, to follow a history."""
        if dep_id is None:
            return self.request("GET", f"/admin/environments/{_q(env_id)}/events", limit=limit,
                                action_id=action_id, after=after)
        return self.request("GET", self._dep(env_id, dep_id) + "/events", limit=limit,
                            after=after)

    # -- actions ---------------------------------------------------------------------------

    def list_actions(self, env_id: str, dep_id: str | None = None, limit: int | None = None
                     ) -> list[dict[str, Any]]:
        return self.request(
            "GET", f"/admin/environments/{_q(env_id)}/actions", deployment_id=dep_id, limit=limit
        )

    def get_action(self, env_id: str, action_id: str) -> dict[str, Any]:
        return self.request(
            "GET", f"/admin/environments/{_q(env_id)}/actions/{_q(action_id)}"
        )

    def enqueue_raw(self, env_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """FOR TESTS: an unvalidated action payload."""
        return self.request("POST", f"/admin/environments/{_q(env_id)}/actions:raw", payload)

    def wait_action(
        self, env_id: str, action_id: str, timeout: float, interval: float = 0.5
    ) -> dict[str, Any]:
        """Poll until the action is completed or `timeout` passes; the last view of it."""
        deadline = time.monotonic() + timeout
        while True:
            action = self.get_action(env_id, action_id)
            if action["state"] == FINISHED or time.monotonic() >= deadline:
                return action
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def _q(part: str) -> str:
    return quote(part, safe="")

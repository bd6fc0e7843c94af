"""`NativeControlPlane`: the agent's client of control-plane protocol v1 (HTTP/JSON).

The one thin wrapper around `requests` for the control plane: it maps every
failure to `agent.errors` and retries, briefly, only what is idempotent
(all calls but `claim`), so that the runtime's own backoff loop stays in
charge of long outages. The token is read per request (rotation works) and
never logged; the CA bundle is passed per request as `verify=`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
from pydantic import ValidationError

from agent import __version__
from agent.controlplane.limits import fit_event, fit_result
from agent.errors import ControlPlaneError, InvalidActionError, LeaseConflictError
from agent.logs import register_secret
from agent.model import (
    Action,
    ActionRef,
    ActionResult,
    ActionType,
    EnvironmentStatus,
    Event,
    InvalidActionRef,
    bounded,
)
from agent.retry import error_for_status, retry_after_of, retrying
from agent.tls import verify_for

if TYPE_CHECKING:
    from agent.config import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: attempts of one idempotent call; their sleeps stay within the request timeout, so that
#: long outages are the runtime's (its service loop backs off and counts failures)
MAX_ATTEMPTS = 3
#: longest action id the agent reports back about (ids go into URLs and logs)
MAX_ID_LENGTH = 256


def _transient(message: str) -> ControlPlaneError:
    error = ControlPlaneError(message)
    error.transient = True
    return error


def readable_validation_error(exc: ValidationError) -> str:
    """'deployment.replicas: Input should be ...; ...' from a pydantic error, `bounded`."""
    parts = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    return bounded("; ".join(parts))


def parse_action_ref(entry: object) -> ActionRef:
    """One entry of the pending list; an `InvalidActionRef` (with the reason, bounded) when it
    does not validate, so that the runtime can report it as failing."""
    try:
        return ActionRef.model_validate(entry)
    except ValidationError as exc:
        reason = bounded(f"listed entry does not validate: {readable_validation_error(exc)}")
    fields = entry if isinstance(entry, dict) else {}
    raw_id = fields.get("id")
    # an id the server could have meant (7 for "7"); anything else leaves it unreportable
    usable = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    deployment_id = fields.get("deployment_id")
    kind = fields.get("type")
    return InvalidActionRef(
        id=str(raw_id)[:MAX_ID_LENGTH] if usable else "",
        type=kind if isinstance(kind, str) and kind in set(ActionType) else "invalid",
        deployment_id=deployment_id if isinstance(deployment_id, str) else None,
        reason=reason,
    )


def default_agent_id(settings: Settings) -> str:
    """Stable-enough identity of this agent process for leases: pod/host name, pid, nonce."""
    base = settings.runtime.leader_election.identity or os.environ.get("POD_NAME") or (
        socket.gethostname()
    )
    return f"{base}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class NativeControlPlane:
    """The `ControlPlane` of protocol v1 (docs/control-plane-protocol.md)."""

    def __init__(
        self,
        settings: Settings,
        agent_id: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.config = settings.control_plane
        self.agent_id = agent_id or default_agent_id(settings)
        self.base_url = self.config.url.rstrip("/") + API_PREFIX
        self.env_path = f"/environments/{quote(self.config.environment_id, safe='')}"
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"management-agent/{__version__}"
        self._sleep = sleep

    # -- the ControlPlane protocol ---------------------------------------------------------

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        wait = max(0.0, min(wait_seconds, 60.0))
        params = {"wait": f"{wait:g}"} if wait else None
        body = self._call("GET", "/actions", params=params, extra_timeout=wait)
        entries = body.get("actions") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ControlPlaneError("control plane sent an unusable action list: "
                                    "expected an object with an 'actions' array")
        # one entry at a time: a malformed one must not keep the valid ones from running
        return [parse_action_ref(entry) for entry in entries]

    def claim(self, action_id: str, lease_seconds: int) -> Action:
        body = self._call(
            "POST", f"/actions/{_q(action_id)}/claim",
            json={"agent_id": self.agent_id, "lease_seconds": lease_seconds}, retry=False,
        )
        if not isinstance(body, dict):
            raise InvalidActionError(
                bounded(f"action {action_id}: payload is not a JSON object"), action_id=action_id
            )
        try:
            return Action.model_validate(body)
        except ValidationError as exc:
            raise InvalidActionError(
                bounded(f"action {action_id}: {readable_validation_error(exc)}"),
                action_id=action_id,
            ) from exc

    def renew(self, action_id: str, lease_seconds: int) -> None:
        self._call("POST", f"/actions/{_q(action_id)}/renew",
                   json={"agent_id": self.agent_id, "lease_seconds": lease_seconds})

    def release(self, action_id: str) -> None:
        self._call("POST", f"/actions/{_q(action_id)}/release", json={"agent_id": self.agent_id})

    def event(self, action_id: str, event: Event) -> None:
        # The event id makes the retry of a lost answer harmless (stored once).
        self._call("POST", f"/actions/{_q(action_id)}/events", json={
            "agent_id": self.agent_id, "event_id": uuid.uuid4().hex,
            "event": fit_event(event).model_dump(mode="json"),
        })

    def complete(self, action_id: str, result: ActionResult) -> None:
        body = self._call("POST", f"/actions/{_q(action_id)}/complete", json={
            "agent_id": self.agent_id,
            "result": fit_result(result).model_dump(mode="json", by_alias=True),
        })
        if isinstance(body, dict) and body.get("duplicate"):
            log.info("action %s was already completed; the stored result stands", action_id,
                     extra={"action_id": action_id})

    def heartbeat(self, status: EnvironmentStatus) -> None:
        self._call("PUT", "/heartbeat", json={
            "agent_id": self.agent_id, "status": status.model_dump(mode="json"),
        })

    def known_deployment_ids(self) -> set[str] | None:
        body = self._call("GET", "/deployments")
        ids = body.get("deployment_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
            raise ControlPlaneError("control plane sent an unusable deployment id list")
        return set(ids)

    def close(self) -> None:
        self.session.close()

    # -- transport -------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, str] | None = None,
        retry: bool = True,
        extra_timeout: float = 0.0,
    ) -> Any:
        """One API call with short retries of transient failures; returns the decoded JSON.

        After the last attempt the transient error itself propagates, still carrying
        `retry_after` for the runtime's own backoff.
        """
        timeout = self.config.timeout_seconds
        for attempt in retrying(f"control plane {method} {path}", MAX_ATTEMPTS if retry else 1,
                                deadline=timeout, sleep=self._sleep, logger=log):
            with attempt:
                return self._send(method, path, json, params, timeout + extra_timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self, method: str, path: str, json: Any, params: dict[str, str] | None, timeout: float
    ) -> Any:
        url = f"{self.base_url}{self.env_path}{path}"
        where = f"{method} {self.config.url.rstrip('/')}{API_PREFIX}{self.env_path}{path}"
        headers = {"Accept": "application/json"}
        try:
            token = self.config.api_token()
        except OSError as exc:
            raise ControlPlaneError(
                f"cannot read control_plane.token_file: {exc.strerror or exc}"
            ) from exc
        if token:
            register_secret(token)  # re-read on rotation: every value is scrubbed
            headers["Authorization"] = f"Bearer {token}"
        verify = verify_for(self.config.ca_bundle, "control_plane.ca_bundle")  # adds to roots
        try:
            response = self.session.request(
                method, url, json=json, params=params, headers=headers, timeout=timeout,
                verify=verify,
            )
        except requests.Timeout as exc:
            raise _transient(f"{where}: timed out after {timeout:g}s") from exc
        except requests.exceptions.SSLError as exc:
            error = ControlPlaneError(f"{where}: TLS error: {_short(exc)}")
            error.transient = False
            raise error from exc
        except requests.RequestException as exc:
            raise _transient(f"{where}: cannot connect ({type(exc).__name__})") from exc
        log.debug("%s -> %d", where, response.status_code)
        return self._decode(where, path, response)

    @staticmethod
    def _decode(where: str, path: str, response: requests.Response) -> Any:
        status = response.status_code
        if status == 204:
            return None
        if status >= 400:
            code, detail = _error_body(response)
            message = f"{where}: {status} {code}: {detail}".rstrip(": ")
            raise error_for_status(status, message, ControlPlaneError,
                                   refine={409: LeaseConflictError},
                                   retry_after=retry_after_of(response.headers))
        try:
            return response.json()
        except ValueError as exc:
            raise _transient(f"{where}: {status} answer is not JSON") from exc


def _error_body(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200].strip()
    if isinstance(body, dict):
        return str(body.get("error", "")), str(body.get("detail", ""))[:500]
    return "", str(body)[:200]


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _q(part: str) -> str:
    return quote(part, safe="")

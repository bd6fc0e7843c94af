"""Take orders from an MLflow Model Registry: an alias (or legacy stage) *is* a deployment.

Each poll makes one paginated `registered-models/search` call (filtered by
the configured tag and name pattern); the answer carries every watched
model's aliases, tags and latest versions, so the cost grows with the number
of watched models, never with the number of versions. The desired
deployments derived from it are diffed against what the plugin reports as
deployed (labels on the target, not memory), which makes the adapter
restart-safe. Override tags (`management-agent.replicas`, `.cpu`, `.memory`,
`.server-profile`, `.image`) are read on every poll: a change on a running version
converges the deployment (a `deployment_start` of the same model, which is
idempotent), and so does the first sight of each deployment after the agent
starts, so that a change made while it was down is applied too. Results are
written back as tags on the model version (`management-agent.state`, `.url`,
`.message`, `.updated`) so they show in the MLflow UI; `.attempt` counts
deliveries (`mlflow_tags`).

When MLflow cannot be reached the poll fails and nothing is derived: a
registry outage never stops a deployment.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import requests

from agent.controlplane.mlflow_tags import TAG_PREFIX, record_attempt, write_result
from agent.errors import ControlPlaneError, InvalidActionError, LeaseConflictError
from agent.logs import register_secret
from agent.model import (
    Action,
    ActionRef,
    ActionResult,
    ActionType,
    DeploymentSpec,
    DeploymentState,
    EnvironmentStatus,
    Event,
    Status,
)
from agent.retry import is_transient_status, retry_after_of, retrying
from agent.tls import verify_for

if TYPE_CHECKING:
    from agent.config import MLflowSettings, Settings
    from agent.plugins import Plugin

log = logging.getLogger(__name__)

#: model or version tags that override the deployment spec
OVERRIDE_TAGS = ("replicas", "cpu", "memory", "server-profile", "image")
UNDEPLOY_TAG = f"{TAG_PREFIX}undeploy"
MAX_TAG_VALUE = 5000  # MLflow's limit on tag values


def deployment_id_for(model_name: str, selector: str) -> str:
    """A DNS-1123 label from model name + alias/stage, hashed when it would be too long."""
    raw = f"{model_name}-{selector}"
    label = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw.lower())).strip("-") or "model"
    if len(label) > 63 or label != raw:  # hashed over the original: 'Iris' and 'iris' differ
        digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
        label = f"{label[:54].rstrip('-')}-{digest}"
    return label


def model_id_for(model_name: str, version: str) -> str:
    return f"{model_name}/{version}"


def fingerprint(spec: DeploymentSpec) -> str:
    """Short hash of everything the registry decides about a deployment (model + overrides)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Desired:
    """One deployment the registry asks for."""

    spec: DeploymentSpec
    model_name: str
    version: str
    selector: str  # "@alias" or "stage:Production"


def _transient(message: str, retry_after: float | None = None) -> ControlPlaneError:
    error = ControlPlaneError(message)
    error.transient, error.retry_after = True, retry_after
    return error


class MLflowRegistry:
    """The thin REST wrapper around the MLflow tracking server (registry endpoints only)."""

    def __init__(self, settings: MLflowSettings, timeout: float) -> None:
        self.settings = settings
        self.base = settings.tracking_uri.rstrip("/") + "/api/2.0/mlflow"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False

    def _auth(self) -> dict[str, Any]:
        from agent.config import read_secret

        try:
            token = read_secret(self.settings.token, self.settings.token_file)
        except OSError as exc:
            raise ControlPlaneError(f"cannot read control_plane.mlflow.token_file: "
                                    f"{exc.strerror or exc}") from exc
        if token:
            register_secret(token)  # re-read on rotation: every value is scrubbed
            return {"headers": {"Authorization": f"Bearer {token}"}}
        if self.settings.username:
            password = self.settings.password.get_secret_value() if self.settings.password else ""
            register_secret(password)
            return {"auth": (self.settings.username, password)}
        return {}

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One REST call with short retries on transient failures; errors as ControlPlaneError."""
        url = f"{self.base}/{path}"
        verify = verify_for(self.settings.ca_bundle, "control_plane.mlflow.ca_bundle")

        def attempt() -> dict[str, Any]:
            try:
                response = self.session.request(method, url, timeout=self.timeout,
                                                verify=verify, **self._auth(), **kwargs)
            except requests.exceptions.SSLError as exc:  # retrying will not fix a certificate
                reason = str(exc).rpartition("Caused by ")[2][:200]
                error = ControlPlaneError(
                    f"MLflow at {self.settings.tracking_uri}: TLS error ({reason}); "
                    "check control_plane.mlflow.ca_bundle")
                error.transient = False
                raise error from exc
            except requests.RequestException as exc:
                raise _transient(f"MLflow at {self.settings.tracking_uri} unreachable: "
                                 f"{type(exc).__name__}") from exc
            if is_transient_status(response.status_code):
                raise _transient(f"MLflow {path} answered {response.status_code}",
                                 retry_after_of(response.headers))
            if response.status_code in (401, 403):
                raise ControlPlaneError(
                    f"MLflow {path} answered {response.status_code}: check "
                    "control_plane.mlflow.token (or username/password)")
            if response.status_code >= 400:
                raise ControlPlaneError(
                    f"MLflow {path} answered {response.status_code}: {response.text[:300]}")
            try:
                data: dict[str, Any] = response.json()
            except ValueError as exc:
                raise _transient(f"MLflow {path} answered something that is not JSON") from exc
            return data

        return retrying(f"MLflow {method} {path}", 3, deadline=self.timeout, logger=log)(attempt)

    def search_models(self, filter_string: str) -> list[dict[str, Any]]:
        """Every registered model matching the filter (all pages)."""
        models: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"max_results": 1000}
            if filter_string:
                params["filter"] = filter_string
            if token:
                params["page_token"] = token
            page = self.call("GET", "registered-models/search", params=params)
            models.extend(page.get("registered_models", []))
            token = page.get("next_page_token")
            if not token:
                return models

    def version(self, name: str, version: str) -> dict[str, Any]:
        data = self.call("GET", "model-versions/get", params={"name": name, "version": version})
        return dict(data.get("model_version", {}))

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.call("POST", "model-versions/set-tag",
                  json={"name": name, "version": version, "key": key,
                        "value": value[:MAX_TAG_VALUE]})

    def close(self) -> None:
        self.session.close()


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag.get("value", "") for tag in entity.get("tags", []) or []}


class MLflowControlPlane:
    """The `ControlPlane` protocol on top of an MLflow Model Registry."""

    def __init__(self, settings: Settings, registry: MLflowRegistry | None = None) -> None:
        self.settings = settings
        self.mlflow = settings.control_plane.mlflow
        self.environment_id = settings.control_plane.environment_id
        self.registry = registry or MLflowRegistry(self.mlflow,
                                                   settings.control_plane.timeout_seconds)
        self._plugin: Plugin | None = None
        self._lock = threading.Lock()
        self._offered: dict[str, Action] = {}
        self._claimed: set[str] = set()
        self._failed: dict[str, str] = {}  # deployment id -> spec fingerprint that failed
        # deployment id -> fingerprint of the spec this process last converged it to
        self._applied: dict[str, str] = {}
        self._desired: dict[str, Desired] | None = None
        self._deployed_versions: dict[str, tuple[str, str]] = {}

    def attach_plugin(self, plugin: Plugin) -> None:
        """The adapter learns what is deployed from the target through the plugin."""
        self._plugin = plugin

    # -- desired state ----------------------------------------------------------------------

    def _filter(self) -> str:
        clauses = []
        if self.mlflow.required_tag:
            key, _, value = self.mlflow.required_tag.partition("=")
            clauses.append(f"tags.`{key}` = '{value or 'true'}'")
        return " AND ".join(clauses)

    def desired(self) -> dict[str, Desired]:
        """Deployments the registry asks for now, by deployment id."""
        found: dict[str, Desired] = {}
        for model in self.registry.search_models(self._filter()):
            name = model["name"]
            if not fnmatch.fnmatchcase(name, self.mlflow.name_pattern):
                continue
            model_tags = _tags(model)
            if model_tags.get(UNDEPLOY_TAG, "").lower() == "true":
                continue
            selectors = [(f"@{a['alias']}", a["alias"], str(a["version"]))
                         for a in model.get("aliases", []) or []
                         if a["alias"] in self.mlflow.aliases]
            selectors += [(f"stage:{v['current_stage']}", v["current_stage"], str(v["version"]))
                          for v in model.get("latest_versions", []) or []
                          if v.get("current_stage") in self.mlflow.stages]
            for selector, label, version in selectors:
                deployment_id = deployment_id_for(name, label)
                spec = self._spec(deployment_id, name, version, model_tags)
                found[deployment_id] = Desired(spec, name, version, selector)
        return found

    def _version_tags(self, name: str, version: str) -> dict[str, str]:
        # read on every poll (one call per watched alias): override tags change on a version
        return _tags(self.registry.version(name, version))

    def _spec(self, deployment_id: str, name: str, version: str,
              model_tags: dict[str, str]) -> DeploymentSpec:
        tags = {**model_tags, **self._version_tags(name, version)}
        override = {key: tags[f"{TAG_PREFIX}{key}"] for key in OVERRIDE_TAGS
                    if f"{TAG_PREFIX}{key}" in tags}
        requests_ = {res: override[res] for res in ("cpu", "memory") if res in override}
        body: dict[str, Any] = {
            "id": deployment_id,
            "model": {"id": model_id_for(name, version), "uri": f"models:/{name}/{version}"},
            "config": {"mlflow.model": name, "mlflow.version": version},
        }
        if "image" in override:
            body["model"]["image"] = override["image"]
        if "replicas" in override:
            body["replicas"] = int(override["replicas"])
        if requests_:
            body["resources"] = {"requests": requests_}
        if "server-profile" in override:
            body["server_profile"] = override["server-profile"]
        return DeploymentSpec.model_validate(body)

    # -- ControlPlane protocol --------------------------------------------------------------

    def pending(self, wait_seconds: float = 0.0) -> list[ActionRef]:
        if self._plugin is None:
            raise ControlPlaneError("the MLflow adapter has no plugin attached")
        desired = self.desired()  # raises on MLflow trouble: then nothing changes
        current = {status.deployment_id: status for status in self._plugin.list()}
        offered: dict[str, Action] = {}
        for deployment_id, want in desired.items():
            have = current.get(deployment_id)
            model_id = want.spec.model.id
            wanted = fingerprint(want.spec)
            if self._failed.get(deployment_id) == wanted:
                continue  # already tried and reported on the version's tags
            if have is None or have.state == DeploymentState.STOPPED:
                kind = ActionType.DEPLOYMENT_START
            elif have.model_id != model_id:
                kind = ActionType.DEPLOYMENT_REPLACE_MODEL
            elif self._applied.get(deployment_id) != wanted:
                kind = ActionType.DEPLOYMENT_START  # same model, other overrides: converge
            else:
                continue
            action = self._action(kind, deployment_id, want.spec, f"{want.version}:{wanted}")
            offered[action.id] = action
        for deployment_id, have in current.items():
            if deployment_id not in desired and have.state != DeploymentState.STOPPED:
                action = self._action(ActionType.DEPLOYMENT_STOP, deployment_id, None,
                                      have.model_id or "unknown")
                offered[action.id] = action
                if have.model_id and "/" in have.model_id:
                    name, _, version = have.model_id.rpartition("/")
                    self._deployed_versions[deployment_id] = (name, version)
        with self._lock:
            self._desired = desired
            self._offered = {**{k: v for k, v in self._offered.items() if k in self._claimed},
                             **offered}
        return [ActionRef(id=a.id, type=a.type, deployment_id=a.deployment_id)
                for a in offered.values()]

    def _action(self, kind: ActionType, deployment_id: str, spec: DeploymentSpec | None,
                version: str) -> Action:
        return Action(id=f"mlflow:{kind.value}:{deployment_id}:{version}", type=kind,
                      environment_id=self.environment_id, deployment_id=deployment_id,
                      deployment=spec, created_at=datetime.now(UTC))

    def claim(self, action_id: str, lease_seconds: int) -> Action:
        with self._lock:
            if action_id in self._claimed:
                raise LeaseConflictError(f"action {action_id} is already running")
            action = self._offered.get(action_id)
            if action is None:
                raise InvalidActionError(f"action {action_id} is no longer wanted", action_id)
            self._claimed.add(action_id)
        target = self._target_version(action) if action.deployment is not None else None
        if target is None:
            return action
        try:  # counted before it runs: an action that kills the agent counts too
            attempt = record_attempt(self.registry, *target, action_id)
        except BaseException:
            self.release(action_id)
            raise
        return action.model_copy(update={"attempt": attempt})

    def renew(self, action_id: str, lease_seconds: int) -> None:
        return None  # leases are local: only the leader polls MLflow

    def release(self, action_id: str) -> None:
        with self._lock:
            self._claimed.discard(action_id)

    def event(self, action_id: str, event: Event) -> None:
        return None  # already in the agent log; MLflow has no event history

    def complete(self, action_id: str, result: ActionResult) -> None:
        with self._lock:
            action = self._offered.get(action_id)
        if action is None:
            return
        target = self._target_version(action)
        if action.deployment_id:
            if action.deployment is None:
                self._applied.pop(action.deployment_id, None)
            elif result.status == Status.FAILING:
                self._failed[action.deployment_id] = fingerprint(action.deployment)
            else:
                self._failed.pop(action.deployment_id, None)
                self._applied[action.deployment_id] = fingerprint(action.deployment)
        try:
            if target is not None:
                write_result(self.registry, *target, result)
        finally:  # a lost tag report must not keep the action claimed until a restart
            with self._lock:
                self._claimed.discard(action_id)
                self._offered.pop(action_id, None)

    def _target_version(self, action: Action) -> tuple[str, str] | None:
        if action.deployment is not None:
            config = action.deployment.config
            return str(config["mlflow.model"]), str(config["mlflow.version"])
        if action.deployment_id:
            return self._deployed_versions.get(action.deployment_id)
        return None

    def heartbeat(self, status: EnvironmentStatus) -> None:
        return None  # MLflow has no place for environment status; the agent log has it

    def known_deployment_ids(self) -> set[str] | None:
        with self._lock:
            return None if self._desired is None else set(self._desired)

    def close(self) -> None:
        self.registry.close()

"""KubernetesPlugin: deployment actions carried out on a Kubernetes namespace.

start / replace_model / relaunch render the deployment (`manifests.render`),
server-side apply it and wait for the rollout; stop deletes by label; status,
list and environment_status read live objects with label-selected LIST calls.
Everything is idempotent: re-running an action converges to the same objects.

Errors: an invalid spec raises `InvalidActionError` before any cluster call;
cluster/permission/build failures raise their `AgentError` (the runtime
completes the action as failing, or retries when `transient`); a rollout that
does not become available is a failing `ActionResult` that says why.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, InvalidActionError, PluginError
from agent.logs import redact_uri
from agent.model import (
    ActionResult,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EnvironmentStatus,
    ResultData,
    Status,
)
from agent.plugins import Reporter
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.apply import (
    Rollout,
    apply_all,
    deadline_exceeded,
    diagnose,
    managed_kinds,
    pod_problems,
    prune,
    rollout_complete,
    serving,
    template_selector,
    wait_for_rollout,
)
from agent.plugins.kubernetes.client import KubeClient, NotFoundError
from agent.plugins.kubernetes.ingress import health_url
from agent.plugins.kubernetes.manifests import (
    fetcher_env,
    model_image_needed,
    prediction_url,
    render,
    resolve_delivery,
    uses_storage_initializer,
    validate_spec,
)
from agent.plugins.kubernetes.settings import ServerProfile

if TYPE_CHECKING:
    from agent.config import Settings

log = logging.getLogger(__name__)

ROLLBACK_TIMEOUT_SECONDS = 300.0
STOP_WAIT_SECONDS = 60.0
LAST_GOOD_MANAGER = "management-agent-last-good"


class _Events:
    """A Reporter that also logs, every line carrying the deployment id."""

    def __init__(self, report: Reporter, deployment_id: str) -> None:
        self.report = report
        self.deployment_id = deployment_id

    def __call__(self, message: str, level: str = "info", **details: Any) -> None:
        # the runtime's reporter logs events at their level; this line is for debugging only
        log.debug("deployment %s: %s: %s", self.deployment_id, level, message,
                  extra={"deployment_id": self.deployment_id})
        try:
            self.report(message, level=level, **{"deployment_id": self.deployment_id, **details})
        except Exception as exc:  # a lost progress note must not fail the action
            log.warning("deployment %s: cannot report event: %s", self.deployment_id, exc)


class KubernetesPlugin:
    """Prediction servers as Deployment + Service + Ingress in one namespace."""

    name = "kubernetes"

    def __init__(self, settings: Settings, *, client: KubeClient | None = None) -> None:
        self.settings = settings
        self.k8s = resolve_delivery(settings.plugin.kubernetes, settings.images.builder)
        self.fetcher_env = fetcher_env(settings.artifacts)
        self.environment_id = settings.control_plane.environment_id
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> KubeClient:
        """The API client, created on first use."""
        with self._lock:
            if self._client is None:
                self._client = KubeClient(self.k8s)
            return self._client

    def close(self) -> None:
        """Release the API client."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ---- actions -----------------------------------------------------------------------

    def start(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Create or converge the deployment; a repeated start changes nothing."""
        return self._converge(spec, _Events(report, spec.id), replacing=False)

    def replace_model(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Roll out the new model; the old one serves until the new one is available."""
        return self._converge(spec, _Events(report, spec.id), replacing=True)

    def relaunch(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Restart the servers (a new restartedAt on the pod template) and wait."""
        events = _Events(report, spec.id)
        restarted_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._converge(spec, events, replacing=True, restarted_at=restarted_at)

    def stop(self, deployment_id: str, report: Reporter) -> ActionResult:
        """Delete everything labelled with the deployment id; already gone is success."""
        events = _Events(report, deployment_id)
        selector = names.managed_selector(deployment_id=deployment_id)
        deleted = []
        for api_version, kind in managed_kinds(self.k8s):
            try:
                found = self.client.list(api_version, kind, label_selector=selector)
            except NotFoundError:  # the kind does not exist on this cluster
                continue
            for obj in found:
                if self.client.delete(api_version, kind, obj["metadata"]["name"]):
                    deleted.append(f"{kind}/{obj['metadata']['name']}")
        if not deleted:
            events("nothing to delete: the deployment was already gone")
            return ActionResult(status=Status.PASSING, state=DeploymentState.STOPPED,
                                data=ResultData(message="already stopped"))
        events(f"deleted {', '.join(deleted)}")
        gone = self._wait_pods_gone(deployment_id)
        message = "stopped" if gone else "stopped; pods are still terminating"
        return ActionResult(status=Status.PASSING, state=DeploymentState.STOPPED,
                            data=ResultData(message=message))

    def status(self, deployment_id: str) -> DeploymentStatus:
        """State from the live Deployment and its pods."""
        name = names.object_name(deployment_id, self.k8s.name_prefix)
        deployment = self.client.get("apps/v1", "Deployment", name)
        if deployment is None:
            return DeploymentStatus(deployment_id=deployment_id, state=DeploymentState.STOPPED,
                                    status=Status.UNKNOWN, message="not deployed")
        selector = template_selector(deployment)
        pods = self.client.list("v1", "Pod", label_selector=selector) if selector else []
        result = self._status_of(deployment, pods)
        if result.state == DeploymentState.ERRORED:
            result.message = diagnose(self.client, deployment)
        if result.state == DeploymentState.READY and self.k8s.probe_public_url:
            result = self._probe(result, deployment)
        return result

    def list(self) -> list[DeploymentStatus]:
        """Every deployment of this environment, from two label-selected LIST calls."""
        selector = names.managed_selector(environment_id=self.environment_id)
        deployments = self.client.list("apps/v1", "Deployment", label_selector=selector)
        pods = self.client.list("v1", "Pod", label_selector=selector)
        by_template: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            key = (labels.get(names.LABEL_INSTANCE, ""), labels.get(names.LABEL_TEMPLATE_HASH, ""))
            by_template.setdefault(key, []).append(pod)
        statuses = []
        for deployment in deployments:
            labels = (deployment["spec"].get("template", {}).get("metadata", {})
                      .get("labels") or {})
            key = (labels.get(names.LABEL_INSTANCE, ""), labels.get(names.LABEL_TEMPLATE_HASH, ""))
            statuses.append(self._status_of(deployment, by_template.get(key, [])))
        return sorted(statuses, key=lambda s: s.deployment_id)

    def environment_status(self, known_ids: set[str] | None = None) -> EnvironmentStatus:
        """Every managed deployment; those the control plane does not know are orphans."""
        from agent import __version__

        deployments = self.list()
        orphans = sorted(d.deployment_id for d in deployments
                         if known_ids is not None and d.deployment_id not in known_ids)
        errored = [d.deployment_id for d in deployments if d.state == DeploymentState.ERRORED]
        notes = []
        if errored:
            notes.append(f"errored: {', '.join(errored)}")
        if orphans:
            notes.append(f"orphaned (managed here, unknown to the control plane): "
                         f"{', '.join(orphans)}")
        return EnvironmentStatus(
            agent_version=__version__, plugin=self.name,
            status=Status.WARNING if notes else Status.PASSING,
            deployments=deployments, orphans=orphans,
            message="; ".join(notes) or f"{len(deployments)} deployment(s) managed",
        )

    # ---- converge ----------------------------------------------------------------------

    def _converge(self, spec: DeploymentSpec, events: _Events, *, replacing: bool,
                  restarted_at: str | None = None) -> ActionResult:
        profile = validate_spec(spec, self.k8s)  # before any cluster call
        spec = self._with_default_credentials(spec)
        timeout = float(spec.config.get("rollout_timeout_seconds")
                        or self.k8s.rollout_timeout_seconds)
        name = names.object_name(spec.id, self.k8s.name_prefix)
        live = self.client.get("apps/v1", "Deployment", name)
        previous = _previous(live)
        if restarted_at is None and live is not None:
            restarted_at = (live["spec"]["template"]["metadata"].get("annotations") or {}).get(
                names.ANNOTATION_RESTARTED_AT)
        # a deployment that never became available counts as ours to clean up, even when an
        # earlier (interrupted) delivery of this start created it
        created = live is None or previous is None
        try:
            spec = self._configure_server(spec, events)
            image = self._image(spec, profile, events)
            objects = render(spec, self.k8s, image, self.environment_id,
                             restarted_at=restarted_at, fetcher_env=self.fetcher_env)
        except AgentError as exc:
            if previous is not None:  # nothing was applied: the old model serves on
                return self._kept_old(spec, previous, live, events, exc)
            raise
        verb = "replacing the model with" if replacing and live is not None else "deploying"
        events(f"{verb} model {spec.model.id} ({image}); applying {len(objects)} objects",
               image=image, model_id=spec.model.id)
        try:
            apply_all(self.client, objects)
            # a fresh start has nothing an earlier rendering left behind: save the DELETEs
            removed = prune(self.client, self.k8s, name, objects) if live is not None else []
            if removed:
                events(f"removed objects no longer wanted: {', '.join(removed)}")
            outcome = wait_for_rollout(self.client, self.k8s, name, timeout=timeout,
                                       progress=events, deployment_id=spec.id)
        except AgentError as exc:
            if previous is None or previous == (spec, image):
                if created:
                    self._cleanup_failed_start(spec, events, str(exc))
                raise
            # part of the new rendering may be applied: go back to the last good one
            outcome = Rollout(False, str(exc), live)
        if outcome.done:
            return self._ready(spec, image, events, outcome)
        if previous is None or previous == (spec, image):
            return self._failed_start(spec, image, events, outcome, created=created)
        return self._rollback(spec, previous, events, outcome, restarted_at, timeout)

    def _kept_old(self, spec: DeploymentSpec, previous: tuple[DeploymentSpec, str],
                  live: dict[str, Any] | None, events: _Events, exc: AgentError) -> ActionResult:
        """The new model could not even be prepared; the running one was not touched."""
        old_spec, old_image = previous
        still_serving = serving(live)
        message = (f"model {spec.model.id} was not deployed: {exc}; model {old_spec.model.id} "
                   + ("is still serving" if still_serving else "stays in place"))
        events(message, level="error")
        return ActionResult(
            status=Status.FAILING,
            state=DeploymentState.READY if still_serving else DeploymentState.ERRORED,
            data=ResultData(prediction_url=prediction_url(old_spec, self.k8s), image=old_image,
                            current_model_id=old_spec.model.id, old_model_in_use=True,
                            message=message))

    def _ready(self, spec: DeploymentSpec, image: str, events: _Events,
               outcome: Rollout) -> ActionResult:
        try:
            self._record_last_good(spec, image, outcome.deployment)
        except AgentError as exc:  # the model serves: a lost bookkeeping write must not fail it
            log.warning("deployment %s: could not record the last good model: %s", spec.id, exc)
        url = prediction_url(spec, self.k8s)
        status = Status.PASSING
        message = f"model {spec.model.id} is serving at {url}"
        if self.k8s.probe_public_url:
            ok, detail = self._probe_url(health_url(spec, self.k8s))
            if not ok:
                status = Status.WARNING
                message = (f"model {spec.model.id} is available in the cluster, but its public "
                           f"URL does not answer yet: {detail}")
        events(message, level="info" if status == Status.PASSING else "warning")
        return ActionResult(status=status, state=DeploymentState.READY, data=ResultData(
            prediction_url=url, image=image, current_model_id=spec.model.id,
            old_model_in_use=False, message=message))

    def _failed_start(self, spec: DeploymentSpec, image: str, events: _Events,
                      outcome: Rollout, *, created: bool) -> ActionResult:
        message = f"model {spec.model.id} did not become available: {outcome.message}"
        if created:
            message += self._cleanup_failed_start(spec, events, outcome.message)
        events(message, level="error")
        return ActionResult.failing(
            message, image=image, current_model_id=None if created else spec.model.id,
            old_model_in_use=False)

    def _cleanup_failed_start(self, spec: DeploymentSpec, events: _Events, reason: str) -> str:
        if self.k8s.keep_failed:
            return ("; kept its objects for debugging (plugin.kubernetes.keep_failed=true): "
                    "stop the deployment to remove them")
        try:
            self.stop(spec.id, events.report)
        except AgentError as exc:
            log.warning("deployment %s: cleanup after failed start failed: %s", spec.id, exc)
            return f"; removing its objects failed too: {exc}"
        return ("; removed the objects it created (set plugin.kubernetes.keep_failed=true to "
                "keep them for debugging)")

    def _rollback(self, spec: DeploymentSpec, previous: tuple[DeploymentSpec, str],
                  events: _Events, outcome: Rollout, restarted_at: str | None,
                  timeout: float) -> ActionResult:
        old_spec, old_image = previous
        reason = f"model {spec.model.id} did not become available: {outcome.message}"
        events(f"{reason}; rolling back to model {old_spec.model.id}", level="error")
        try:
            objects = render(old_spec, self.k8s, old_image, self.environment_id,
                             restarted_at=restarted_at, fetcher_env=self.fetcher_env)
            apply_all(self.client, objects)
            prune(self.client, self.k8s, names.object_name(spec.id, self.k8s.name_prefix),
                  objects)
            back = wait_for_rollout(
                self.client, self.k8s, names.object_name(spec.id, self.k8s.name_prefix),
                timeout=min(ROLLBACK_TIMEOUT_SECONDS, timeout),
                deployment_id=spec.id)
        except AgentError as exc:
            message = f"{reason}; rolling back to model {old_spec.model.id} failed: {exc}"
            events(message, level="error")
            return ActionResult.failing(message, old_model_in_use=True,
                                        current_model_id=old_spec.model.id, image=old_image)
        still_serving = back.done or serving(back.deployment)
        state = DeploymentState.READY if still_serving else DeploymentState.ERRORED
        message = (f"{reason}; rolled back: model {old_spec.model.id} "
                   + ("is still serving" if still_serving else
                      f"is not available either: {back.message}"))
        events(message, level="warning" if still_serving else "error")
        return ActionResult(status=Status.FAILING, state=state, data=ResultData(
            prediction_url=prediction_url(old_spec, self.k8s), image=old_image,
            current_model_id=old_spec.model.id, old_model_in_use=True, message=message))

    # ---- helpers -----------------------------------------------------------------------

    def _record_last_good(self, spec: DeploymentSpec, image: str,
                          live: dict[str, Any] | None) -> None:
        """Remember the spec and image that last rolled out, for rollbacks after a crash.

        Written with its own field manager, so the main apply never removes it.
        """
        good = {names.ANNOTATION_LAST_GOOD_SPEC: spec.model_dump_json(exclude_defaults=True),
                names.ANNOTATION_LAST_GOOD_IMAGE: image}
        current = ((live or {}).get("metadata") or {}).get("annotations") or {}
        if all(current.get(k) == v for k, v in good.items()):
            return
        name = names.object_name(spec.id, self.k8s.name_prefix)
        self.client.apply(
            {"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": name, "namespace": self.k8s.namespace, "annotations": good}},
            field_manager=LAST_GOOD_MANAGER,
        )

    def _with_default_credentials(self, spec: DeploymentSpec) -> DeploymentSpec:
        default = self.settings.artifacts.default_credentials_secret
        if spec.model.credentials_secret or not default or spec.model.uri is None:
            return spec
        model = spec.model.model_copy(update={"credentials_secret": default})
        return spec.model_copy(update={"model": model})

    def _configure_server(self, spec: DeploymentSpec, events: _Events) -> DeploymentSpec:
        """Built-in profiles: recognise the model and set the server's runtime (agent.serving)."""
        from agent.serving import configure_for_model

        credentials = None
        if spec.model.credentials_secret and spec.model.uri and not spec.model.image:
            credentials = self.client.read_secret(spec.model.credentials_secret)
        spec, found = configure_for_model(spec, self.k8s, self.settings.artifacts, credentials)
        if found:
            events(found)
        return spec

    def _image(self, spec: DeploymentSpec, profile: ServerProfile, events: _Events) -> str:
        if spec.model.image:
            return spec.model.image
        assert profile.image is not None  # validate_spec checked it
        if uses_storage_initializer(spec, self.k8s):
            events(f"storage-initializer mode: {profile.image} fetches "
                   f"{redact_uri(spec.model.uri)} at start")
            return profile.image
        if not model_image_needed(spec, self.k8s):
            return profile.image
        if self.settings.images.builder == "none":
            raise InvalidActionError(
                f"deployment {spec.id}: images.builder is none and plugin.kubernetes."
                "model_delivery is image: give model.image or use storage-initializer mode")
        try:
            from agent.images import build_model_image
        except ImportError as exc:
            raise PluginError(
                f"deployment {spec.id}: the image builder (agent.images.build_model_image) is "
                "not available in this build; set plugin.kubernetes.model_delivery="
                "storage-initializer or give model.image") from exc
        credentials = None
        if spec.model.credentials_secret:
            credentials = self.client.read_secret(spec.model.credentials_secret)
        kwargs: dict[str, Any] = {}
        if "kube" in inspect.signature(build_model_image).parameters:
            kwargs["kube"] = self.client
        events(f"building the model image from {profile.image}")
        built = build_model_image(spec, profile.image, profile.model_path, self.settings,
                                  events, credentials, **kwargs)
        events(f"model image {built.reference} ({built.digest}) "
               + ("reused" if built.reused else "built"), image=built.reference)
        return str(built.reference)

    def _status_of(self, deployment: dict[str, Any],
                   pods: builtins.list[dict[str, Any]]) -> DeploymentStatus:
        meta = deployment["metadata"]
        annotations = meta.get("annotations") or {}
        deployment_id = annotations.get(names.ANNOTATION_DEPLOYMENT_ID) or (
            meta.get("labels") or {}).get(names.LABEL_DEPLOYMENT_ID, meta["name"])
        base = {
            "deployment_id": deployment_id,
            "model_id": annotations.get(names.ANNOTATION_MODEL_ID),
            "prediction_url": annotations.get(names.ANNOTATION_PREDICTION_URL),
        }
        if meta.get("deletionTimestamp"):
            return DeploymentStatus(**base, state=DeploymentState.STOPPED, status=Status.UNKNOWN,
                                    message="being deleted")
        if deployment["spec"].get("replicas", 1) == 0 and rollout_complete(deployment):
            return DeploymentStatus(**base, state=DeploymentState.STOPPED, status=Status.PASSING,
                                    message="scaled to zero replicas")
        if rollout_complete(deployment):
            return DeploymentStatus(**base, state=DeploymentState.READY, status=Status.PASSING,
                                    message="all replicas available")
        problems = [f"{pod['metadata']['name']}: {reason}" + (f" ({c})" if c else "")
                    for pod in pods for reason, c, _ in pod_problems(pod)]
        failed = deadline_exceeded(deployment)
        if failed or problems:
            reason = failed or "; ".join(problems)
            if serving(deployment):
                return DeploymentStatus(**base, state=DeploymentState.READY,
                                        status=Status.WARNING,
                                        message=f"new pods failing ({reason}); old pods serve")
            return DeploymentStatus(**base, state=DeploymentState.ERRORED,
                                    status=Status.FAILING, message=reason)
        if serving(deployment):
            return DeploymentStatus(**base, state=DeploymentState.REPLACING_MODEL,
                                    status=Status.PASSING, message="rollout in progress")
        return DeploymentStatus(**base, state=DeploymentState.LAUNCHING, status=Status.UNKNOWN,
                                message="waiting for replicas to become available")

    def _probe(self, result: DeploymentStatus, deployment: dict[str, Any]) -> DeploymentStatus:
        previous = _previous(deployment)
        if previous is None:
            return result
        ok, detail = self._probe_url(health_url(previous[0], self.k8s), wait=0)
        if ok:
            return result
        return result.model_copy(update={
            "state": DeploymentState.LAUNCHING, "status": Status.WARNING,
            "message": f"replicas available, but the public URL does not answer: {detail}"})

    def _probe_url(self, url: str, wait: float | None = None) -> tuple[bool, str]:
        """GET the health path through the public URL, retrying for up to `wait` seconds

        (the ingress controller needs a moment to pick up new endpoints).
        """
        import time

        import requests

        verify: Any = str(self.k8s.public_probe_ca_bundle) if self.k8s.public_probe_ca_bundle \
            else True
        deadline = time.monotonic() + (self.k8s.public_probe_timeout_seconds
                                       if wait is None else wait)
        while True:
            try:
                response = requests.get(url, timeout=5, verify=verify)
                if response.status_code < 400:
                    return True, "ok"
                detail = f"GET {url}: HTTP {response.status_code}"
            except requests.RequestException as exc:
                detail = f"GET {url}: {exc}"
            if time.monotonic() >= deadline:
                return False, detail
            time.sleep(min(1.0, self.k8s.poll_interval_seconds))

    def _wait_pods_gone(self, deployment_id: str) -> bool:
        import time

        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(deployment_id).items())
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not self.client.list("v1", "Pod", label_selector=selector):
                return True
            time.sleep(self.k8s.poll_interval_seconds)
        return False


def _previous(deployment: dict[str, Any] | None) -> tuple[DeploymentSpec, str] | None:
    """(spec, image) to roll back to: the last rollout that succeeded, if any.

    Never the last *applied* spec: that one may never have worked.
    """
    if deployment is None:
        return None
    annotations = deployment["metadata"].get("annotations") or {}
    raw = annotations.get(names.ANNOTATION_LAST_GOOD_SPEC)
    image = annotations.get(names.ANNOTATION_LAST_GOOD_IMAGE)
    if not raw or not image:
        return None
    try:
        return DeploymentSpec.model_validate_json(raw), image
    except ValueError:
        return None

"""KubernetesPlugin: deployment actions carried out on a Kubernetes namespace.

start / replace_model / relaunch validate the spec, resolve the server image
(`agent.images.resolve_image`), render the deployment (`manifests.render`),
server-side apply it and wait for the rollout; what follows an attempt (ready,
roll back, keep the old model, clean up) is decided by `converge.decide`.
stop deletes by label (every kind it may have created, the routes of other ingress modes
too); status, list and environment_status read live objects with label-selected,
paginated LIST calls (`status.status_of`). Everything is idempotent: re-running an action
converges to the same objects.

Errors: an invalid spec raises `InvalidActionError` before any cluster call;
cluster/permission/build failures raise their `AgentError` (the runtime
completes the action as failing, or retries when `transient`); a rollout that
does not become available is a failing `ActionResult` that says why.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError
from agent.images import resolve_image
from agent.images.delivery import DeliveryMode, delivery_mode, mode_of_last_good
from agent.images.fetcher import fetcher_env
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
from agent.plugins.kubernetes import converge, modelsecret, names
from agent.plugins.kubernetes.apply import (
    Rollout,
    diagnose,
    owned,
    prune,
    removable_kinds,
    wait_for_rollout,
)
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.converge import Next, Outcome
from agent.plugins.kubernetes.history import Good, last_good, migrate, record_last_good
from agent.plugins.kubernetes.ingress import health_url
from agent.plugins.kubernetes.manifests import prediction_url, render, validate_spec
from agent.plugins.kubernetes.options import deployment_options
from agent.plugins.kubernetes.probe import probe_url
from agent.plugins.kubernetes.status import serving, status_of, template_selector

if TYPE_CHECKING:
    from agent.config import Settings

log = logging.getLogger(__name__)

ROLLBACK_TIMEOUT_SECONDS = 300.0
STOP_WAIT_SECONDS = 60.0
VERSION_TTL_SECONDS = 600.0  # the cluster's version is read again after an upgrade


class KubernetesPlugin:
    """Prediction servers as Deployment + Service + Ingress in one namespace."""

    name = "kubernetes"

    def __init__(self, settings: Settings, *, client: KubeClient | None = None) -> None:
        self.settings = settings
        self.k8s = settings.plugin.kubernetes
        self.fetcher_env = fetcher_env(settings.artifacts, settings.tls)
        self.environment_id = settings.control_plane.environment_id
        self._client = client
        self._lock = threading.Lock()
        self._version: tuple[float, str | None] = (-VERSION_TTL_SECONDS, None)

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
        return self._converge(spec, report, replacing=False)

    def replace_model(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Roll out the new model; the old one serves until the new one is available."""
        return self._converge(spec, report, replacing=True)

    def relaunch(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        """Restart the servers (a new restartedAt on the pod template) and wait."""
        restarted_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._converge(spec, report, replacing=True, restarted_at=restarted_at)

    def stop(self, deployment_id: str, report: Reporter) -> ActionResult:
        """Delete everything labelled with the deployment id; already gone is success."""
        deleted = []
        for api_version, kind in removable_kinds():  # every route kind, whatever the mode
            for obj in owned(self.client, api_version, kind, deployment_id):
                if self.client.delete(api_version, kind, obj["metadata"]["name"]):
                    deleted.append(f"{kind}/{obj['metadata']['name']}")
        if not deleted:
            report("nothing to delete: the deployment was already gone")
            return ActionResult(status=Status.PASSING, state=DeploymentState.STOPPED,
                                data=ResultData(message="already stopped"))
        report(f"deleted {', '.join(deleted)}")
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
        result = status_of(deployment, pods)
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
        by_template: dict[tuple[str, str], builtins.list[dict[str, Any]]] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            key = (labels.get(names.LABEL_INSTANCE, ""), labels.get(names.LABEL_TEMPLATE_HASH, ""))
            by_template.setdefault(key, []).append(pod)
        statuses = []
        for deployment in deployments:
            labels = (deployment["spec"].get("template", {}).get("metadata", {})
                      .get("labels") or {})
            key = (labels.get(names.LABEL_INSTANCE, ""), labels.get(names.LABEL_TEMPLATE_HASH, ""))
            statuses.append(status_of(deployment, by_template.get(key, [])))
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

    def _converge(self, spec: DeploymentSpec, report: Reporter, *, replacing: bool,
                  restarted_at: str | None = None) -> ActionResult:
        """Apply `spec` and carry out what `converge.decide` says follows the attempt."""
        spec = self._with_default_credentials(spec)
        mode = self._mode(spec)
        profile = validate_spec(spec, self.k8s, mode, self.fetcher_env)  # before any apply
        timeout = deployment_options(spec).rollout_timeout_seconds \
            or self.k8s.rollout_timeout_seconds
        name = names.object_name(spec.id, self.k8s.name_prefix)
        live = self.client.get("apps/v1", "Deployment", name)
        migrate(self.client, name, self.k8s.namespace, live)
        good = last_good(self.client, live)
        if restarted_at is None and live is not None:
            restarted_at = (live["spec"]["template"]["metadata"].get("annotations") or {}).get(
                names.ANNOTATION_RESTARTED_AT)
        try:
            spec = self._configure_server(spec, report)
            delivery = resolve_image(spec, profile, self.settings, report, kube=self.client,
                                     mode=mode)
            objects = render(spec, self.k8s, delivery.image, self.environment_id,
                             restarted_at=restarted_at, fetcher_env=self.fetcher_env,
                             mode=delivery.mode, model_volume=delivery.volume)
        except AgentError as exc:
            if converge.decide(Outcome.PREPARE_FAILED, live=live, last_good=good,
                               wanted=None).next is Next.FAIL:
                raise
            assert good is not None  # KEEP_OLD
            result = converge.kept_old_result(spec, good, self._serving(live),
                                              prediction_url(good[0], self.k8s), exc)
            report(result.data.message or "", level="error")
            return result
        image = delivery.model_image  # in image-volume mode: the model-only image
        verb = "replacing the model with" if replacing and live is not None else "deploying"
        report(f"{verb} model {spec.model.id} ({image}); applying {len(objects)} objects",
               image=image, model_id=spec.model.id)
        try:
            outcome = self._roll_out(spec, name, objects, live, good, timeout, report)
        except AgentError as exc:
            decision = converge.decide(Outcome.APPLY_FAILED, live=live, last_good=good,
                                       wanted=(spec, image))
            if decision.next is Next.FAIL:
                if decision.clean_up:
                    self._cleanup_failed_start(spec, report)
                raise
            # part of the new rendering may be applied: go back to the last good one
            outcome = Rollout(False, str(exc), live)
        decision = converge.decide(Outcome.ROLLED_OUT if outcome.done else Outcome.NOT_AVAILABLE,
                                   live=live, last_good=good, wanted=(spec, image))
        if decision.next is Next.READY:
            return self._ready(spec, image, report, outcome)
        if decision.next is Next.FAIL:
            note = self._cleanup_failed_start(spec, report) if decision.clean_up else ""
            result = converge.failed_start_result(spec, image, outcome.message,
                                                  created=decision.clean_up, cleanup_note=note)
            report(result.data.message or "", level="error")
            return result
        assert good is not None
        return self._rollback(spec, good, report, outcome, restarted_at, timeout)

    def _roll_out(self, spec: DeploymentSpec, name: str, objects: builtins.list[dict[str, Any]],
                  live: dict[str, Any] | None, good: Good | None, timeout: float,
                  report: Reporter) -> Rollout:
        """Apply, prune what an earlier rendering left, wait for the rollout."""
        self._apply(name, objects, live, good)
        # a fresh start has nothing an earlier rendering left behind: save the DELETEs
        removed = prune(self.client, spec.id, objects) if live is not None else []
        if removed:
            report(f"removed objects no longer wanted: {', '.join(removed)}")
        return wait_for_rollout(self.client, self.k8s, name, timeout=timeout, progress=report,
                                deployment_id=spec.id)

    def _ready(self, spec: DeploymentSpec, image: str, report: Reporter,
               outcome: Rollout) -> ActionResult:
        name = names.object_name(spec.id, self.k8s.name_prefix)
        try:
            record_last_good(self.client, name, self.k8s.namespace, (spec, image),
                             outcome.deployment)
        except AgentError as exc:  # the model serves: a lost bookkeeping write must not fail it
            log.warning("deployment %s: could not record the last good model: %s", spec.id, exc)
        problem = None
        if self.k8s.probe_public_url:
            ok, detail = probe_url(health_url(spec, self.k8s), self.k8s)
            problem = None if ok else detail
        result = converge.ready_result(spec, image, prediction_url(spec, self.k8s), problem)
        report(result.data.message or "", level="info" if problem is None else "warning")
        return result

    def _cleanup_failed_start(self, spec: DeploymentSpec, report: Reporter) -> str:
        """Remove what a failed start created (unless keep_failed); a note for the message."""
        if self.k8s.keep_failed:
            return ("; kept its objects for debugging (plugin.kubernetes.keep_failed=true): "
                    "stop the deployment to remove them")
        try:
            self.stop(spec.id, report)
        except AgentError as exc:
            log.warning("deployment %s: cleanup after failed start failed: %s", spec.id, exc)
            return f"; removing its objects failed too: {exc}"
        return ("; removed the objects it created (set plugin.kubernetes.keep_failed=true to "
                "keep them for debugging)")

    def _rollback(self, spec: DeploymentSpec, good: Good, report: Reporter, outcome: Rollout,
                  restarted_at: str | None, timeout: float) -> ActionResult:
        old_spec, old_image = good
        reason = f"model {spec.model.id} did not become available: {outcome.message}"
        report(f"{reason}; rolling back to model {old_spec.model.id}", level="error")
        name = names.object_name(spec.id, self.k8s.name_prefix)
        try:
            mode = mode_of_last_good(old_image, self._mode(old_spec))
            server, volume = old_image, None
            if mode is DeliveryMode.IMAGE_VOLUME:  # the old model's image is the volume
                profile = validate_spec(old_spec, self.k8s, mode, self.fetcher_env)
                server, volume = profile.image or "", old_image
            objects = render(old_spec, self.k8s, server, self.environment_id,
                             restarted_at=restarted_at, fetcher_env=self.fetcher_env,
                             mode=mode, model_volume=volume)
            self._apply(name, objects, self.client.get("apps/v1", "Deployment", name), good)
            prune(self.client, spec.id, objects)
            back = wait_for_rollout(self.client, self.k8s, name,
                                    timeout=min(ROLLBACK_TIMEOUT_SECONDS, timeout),
                                    deployment_id=spec.id)
        except AgentError as exc:
            result = converge.rollback_failed_result(reason, good, exc)
            report(result.data.message or "", level="error")
            return result
        still_serving = back.done or self._serving(back.deployment)
        result = converge.rollback_result(reason, good, prediction_url(old_spec, self.k8s),
                                          back_serving=still_serving, back_problem=back.message)
        report(result.data.message or "", level="warning" if still_serving else "error")
        return result

    # ---- helpers -----------------------------------------------------------------------

    def _mode(self, spec: DeploymentSpec) -> DeliveryMode:
        """The delivery mode of `spec`; `auto` asks the cluster's version (discovery)."""
        version = self._cluster_version() if self.k8s.model_delivery == "auto" else None
        return delivery_mode(spec.model, self.k8s.model_delivery, self.settings.images.builder,
                             version, self.k8s.image_volume_min_version)

    def _cluster_version(self) -> str | None:
        """`major.minor` from `/version`, cached; None (no image volumes) when unreadable."""
        read_at, version = self._version
        if time.monotonic() - read_at < VERSION_TTL_SECONDS:
            return version
        try:
            info = self.client.request("GET", "/version", verb="get")
            version = f"{info.get('major', '')}.{info.get('minor', '')}"
        except AgentError as exc:
            log.warning("cannot read the cluster's version (%s): auto delivery will not use "
                        "image volumes", exc)
            version = None
        self._version = (time.monotonic(), version)
        return version

    def _apply(self, name: str, objects: builtins.list[dict[str, Any]],
               live: dict[str, Any] | None, good: Good | None) -> None:
        kept = [good[0].model.uri] if good is not None and good[0].model.uri else []
        modelsecret.apply_with_secret(self.client, name, objects, live, kept)

    def _with_default_credentials(self, spec: DeploymentSpec) -> DeploymentSpec:
        default = self.settings.artifacts.default_credentials_secret
        if spec.model.credentials_secret or not default or spec.model.uri is None:
            return spec
        model = spec.model.model_copy(update={"credentials_secret": default})
        return spec.model_copy(update={"model": model})

    def _configure_server(self, spec: DeploymentSpec, report: Reporter) -> DeploymentSpec:
        """Built-in profiles: recognise the model and set the server's runtime (agent.serving)."""
        from agent.artifacts.secrets import read_credentials_secret
        from agent.serving import configure_for_model

        credentials = None
        if spec.model.credentials_secret and spec.model.uri and not spec.model.image:
            credentials = read_credentials_secret(self.client, spec.model.credentials_secret,
                                                  self.settings.artifacts)
        spec, found = configure_for_model(spec, self.k8s, self.settings.artifacts, credentials)
        if found:
            report(found)
        return spec

    def _probe(self, result: DeploymentStatus, deployment: dict[str, Any]) -> DeploymentStatus:
        good = last_good(self.client, deployment)
        if good is None:
            return result
        ok, detail = probe_url(health_url(good[0], self.k8s), self.k8s, wait=0)
        if ok:
            return result
        return result.model_copy(update={
            "state": DeploymentState.LAUNCHING, "status": Status.WARNING,
            "message": f"replicas available, but the public URL does not answer: {detail}"})

    def _serving(self, deployment: dict[str, Any] | None) -> bool:
        """Whether ready pods of the Deployment's current template (its model) serve."""
        selector = template_selector(deployment) if deployment is not None else ""
        pods = self.client.list("v1", "Pod", label_selector=selector) if selector else []
        return serving(deployment, pods)

    def _wait_pods_gone(self, deployment_id: str) -> bool:
        selector = ",".join(f"{k}={v}" for k, v in names.selector_labels(deployment_id).items())
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            if not self.client.list("v1", "Pod", label_selector=selector):
                return True
            time.sleep(self.k8s.poll_interval_seconds)
        return False

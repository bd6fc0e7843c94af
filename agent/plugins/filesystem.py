"""The filesystem plugin: renders each deployment into a directory instead of a cluster.

One folder per deployment holds the same manifests the Kubernetes plugin
applies (`manifests.yaml`) and the deployment's recorded state
(`state.json`). It lets the whole loop run without a cluster (the demo) and,
with git enabled, hands manifests to GitOps tools (Argo CD, Flux) with one
commit per action. Writes are atomic (temp file + rename) so a crash never
leaves a half-written folder, and every action is idempotent.

Nothing secret is written (the folder is pushed to git): `state.json` keeps
the model URI redacted, the Deployment only a hash of the spec, and in
storage-initializer mode the Secret holding the model URI is written only for a
URI that carries no credential (no user info, no query such as a signature);
other URIs are refused (credentials belong in a credentials Secret created
outside git). The credentials-Secret name policy applies as in the cluster.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from agent import __version__
from agent.artifacts.secrets import check_credentials_secret
from agent.config import Settings
from agent.errors import ArtifactError, InvalidActionError, PluginError
from agent.logs import redact_uri
from agent.model import (
    DEPLOYMENT_ID_PATTERN,
    ActionResult,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EnvironmentStatus,
    ResultData,
    Status,
)
from agent.plugins import Plugin, Reporter
from agent.plugins.gitops import GitRepository

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MANIFESTS_FILE = "manifests.yaml"


def _refuse_secret_data(spec: DeploymentSpec, objects: list[dict[str, Any]]) -> None:
    """Refuse to commit a Secret whose data is a credential (a URI with user info or a query).

    The storage initializer reads the model URI from the deployment's Secret; a plain
    location is no secret (state.json shows it too), a signed URL or one with a password is.
    """
    uri = spec.model.uri or ""
    if any(o["kind"] == "Secret" for o in objects) and redact_uri(uri) != uri:
        raise InvalidActionError(
            f"deployment {spec.id}: model URI {redact_uri(uri)} carries credentials (user info "
            "or a query such as a signature), which GitOps output would commit to git: use a "
            "plain URI with model.credentials_secret (a Secret created outside git, e.g. with "
            "Sealed Secrets or External Secrets), or image mode")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FilesystemPlugin:
    """Deployments as folders of rendered manifests (optionally a git working copy)."""

    name = "filesystem"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.plugin.filesystem.output_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.kube = settings.plugin.kubernetes
        # one output directory: writes of parallel actions (and their commits) take turns, or
        # two of them could each rewrite kustomization.yaml from a stale folder listing
        self._write_lock = threading.Lock()
        self._live: Plugin | None = None  # the cluster, with read_live_state
        git = settings.plugin.filesystem.git
        self.repo: GitRepository | None = None
        if git.enabled:
            from agent.config import read_secret

            self.repo = GitRepository(
                self.root, git.branch, git.remote, (git.author_name, git.author_email),
                token=read_secret(git.token, git.token_file), ssh_key=git.ssh_key_file)

    # -- actions ----------------------------------------------------------------------------

    def start(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        return self._render(spec, report, verb="start", state=DeploymentState.READY)

    def replace_model(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        previous = self._read_state(spec.id)
        result = self._render(spec, report, verb="replace model", state=DeploymentState.READY)
        if previous and previous.get("model_id") != spec.model.id:
            report(f"model replaced: {previous.get('model_id')} -> {spec.model.id}")
        return result

    def relaunch(self, spec: DeploymentSpec, report: Reporter) -> ActionResult:
        restarted = datetime.now(UTC).isoformat()
        return self._render(spec, report, verb="relaunch", state=DeploymentState.READY,
                            restarted_at=restarted)

    def stop(self, deployment_id: str, report: Reporter) -> ActionResult:
        folder = self._folder(deployment_id)
        existed = folder.exists()

        def remove() -> None:
            if folder.exists():
                shutil.rmtree(folder)
            self._write_kustomization()

        commit = self._save(f"stop {deployment_id}", remove)
        report(f"removed {folder}" if existed
               else f"deployment {deployment_id} was not deployed here; nothing to remove")
        message = f"deployment {deployment_id} stopped"
        if commit:
            message += f"; committed {commit[:12]}"
        return ActionResult(status=Status.PASSING, state=DeploymentState.STOPPED,
                            data=ResultData(message=message,
                                            details={"commit": commit} if commit else {}))

    def status(self, deployment_id: str) -> DeploymentStatus:
        state = self._read_state(deployment_id)
        if state is None:
            return DeploymentStatus(deployment_id=deployment_id, state=DeploymentState.STOPPED,
                                    status=Status.UNKNOWN, message="not deployed")
        committed = self._status_from(state)
        if not self.settings.plugin.filesystem.read_live_state:
            return committed
        return self._live_status(committed)

    def _live_status(self, committed: DeploymentStatus) -> DeploymentStatus:
        """The cluster's view once the GitOps controller applied the committed model."""
        live = self._live_plugin().status(committed.deployment_id)
        if live.state == DeploymentState.STOPPED or live.model_id != committed.model_id:
            return committed.model_copy(update={
                "state": DeploymentState.LAUNCHING, "status": Status.UNKNOWN,
                "message": f"model {committed.model_id} committed; not yet applied to the "
                           "cluster by the GitOps controller"})
        return live

    def list(self) -> list[DeploymentStatus]:
        found = []
        for folder in sorted(self.root.iterdir()):
            deployment = folder.is_dir() and DEPLOYMENT_ID_PATTERN.match(folder.name)
            state = self._read_state(folder.name) if deployment else None
            if state is not None:
                found.append(self._status_from(state))
        return found

    def environment_status(self, known_ids: set[str] | None = None) -> EnvironmentStatus:
        deployments = self.list()
        orphans = [] if known_ids is None else sorted(
            d.deployment_id for d in deployments if d.deployment_id not in known_ids
        )
        return EnvironmentStatus(
            agent_version=__version__, plugin=self.name,
            status=Status.WARNING if orphans else Status.PASSING,
            deployments=deployments, orphans=orphans,
            message=f"{len(orphans)} orphaned deployment(s)" if orphans else None,
        )

    def close(self) -> None:
        if self._live is not None:
            self._live.close()

    # -- rendering --------------------------------------------------------------------------

    def _render(self, spec: DeploymentSpec, report: Reporter, verb: str, state: DeploymentState,
                restarted_at: str | None = None) -> ActionResult:
        from agent.images import resolve_image
        from agent.images.delivery import delivery_mode
        from agent.images.fetcher import fetcher_env
        from agent.plugins.kubernetes.manifests import prediction_url, render, validate_spec

        # GitOps tools cannot build images: in image mode the agent builds and pushes the
        # model image (direct builder) before committing manifests that name it
        mode = delivery_mode(spec.model, self.kube.model_delivery, self.settings.images.builder)
        profile = validate_spec(spec, self.kube, mode, fetcher_env(self.settings.artifacts))
        self._check_credentials_secret(spec)
        delivery = resolve_image(spec, profile, self.settings, report)
        image = delivery.image
        objects = render(spec, self.kube, image, self.settings.control_plane.environment_id,
                         restarted_at=restarted_at, mode=delivery.mode,
                         fetcher_env=fetcher_env(self.settings.artifacts,
                                                 self.settings.tls))
        _refuse_secret_data(spec, objects)
        url = prediction_url(spec, self.kube)
        folder = self._folder(spec.id)
        manifests = yaml.safe_dump_all(objects, sort_keys=False)
        changed = not (folder / MANIFESTS_FILE).exists() or (
            (folder / MANIFESTS_FILE).read_text() != manifests
        )
        names = [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
        previous = self._read_state(spec.id) or {}
        record = {
            "deployment_id": spec.id, "model_id": spec.model.id,
            "model_uri": redact_uri(spec.model.uri) or None,
            "image": image, "prediction_url": url, "state": state.value,
            "updated_at": previous.get("updated_at") if not changed else
            datetime.now(UTC).isoformat(),
            "objects": names,
        }

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / MANIFESTS_FILE, manifests)
            _write_atomic(folder / STATE_FILE, json.dumps(record, indent=2) + "\n")
            self._write_kustomization()

        # commits whenever the tree differs from HEAD: an earlier attempt may have written
        # the files and died before its commit
        commit = self._save(f"{verb} {spec.id}: model {spec.model.id}", write)
        report(f"rendered {len(objects)} object(s) to {folder}" if changed
               else f"{folder} already up to date", objects=names)
        message = f"deployment {spec.id} rendered with model {spec.model.id}"
        details: dict[str, Any] = {"path": str(folder)}
        if commit:
            details["commit"] = commit
            message += f"; committed {commit[:12]}"
        return ActionResult(
            status=Status.PASSING, state=state,
            data=ResultData(prediction_url=url, image=image, current_model_id=spec.model.id,
                            old_model_in_use=False, message=message, details=details),
        )

    def _check_credentials_secret(self, spec: DeploymentSpec) -> None:
        """The ops' policy on which Secrets deployments may name, as the cluster plugin has it.

        The name prefix needs no cluster; the label needs the Secret's labels, read through
        the cluster when `read_live_state` gives access to it.
        """
        name, artifacts = spec.model.credentials_secret, self.settings.artifacts
        if not name or name == artifacts.default_credentials_secret:
            return
        labels = None
        if artifacts.credentials_secret_label:
            if not self.settings.plugin.filesystem.read_live_state:
                raise ArtifactError(
                    f"credentials secret {name!r}: artifacts.credentials_secret_label is set "
                    "but the filesystem plugin cannot read the Secret's labels without cluster "
                    "access (plugin.filesystem.read_live_state); for GitOps output use "
                    "artifacts.credentials_secret_prefix")
            secret = self._live_plugin().client.get("v1", "Secret", name)
            labels = ((secret or {}).get("metadata") or {}).get("labels")
        check_credentials_secret(name, labels, artifacts)

    def _live_plugin(self) -> Any:
        """The Kubernetes plugin reading the cluster (read_live_state), created on first use."""
        if self._live is None:
            from agent.plugins.kubernetes.plugin import KubernetesPlugin

            self._live = KubernetesPlugin(self.settings)
        return self._live

    def _folder(self, deployment_id: str) -> Path:
        """The deployment's folder; refuses ids that would point outside the output dir."""
        folder = (self.root / deployment_id).resolve()
        if folder.parent != self.root or folder.name.startswith("."):
            raise InvalidActionError(
                f"deployment id {deployment_id!r} does not name a folder inside {self.root}")
        return folder

    def _read_state(self, deployment_id: str) -> dict[str, Any] | None:
        path = self._folder(deployment_id) / STATE_FILE
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise PluginError(
                f"state of deployment {deployment_id} unreadable at {path}: {exc}"
            ) from exc

    @staticmethod
    def _status_from(state: dict[str, Any]) -> DeploymentStatus:
        return DeploymentStatus(
            deployment_id=state["deployment_id"], state=DeploymentState(state["state"]),
            status=Status.PASSING, model_id=state.get("model_id"),
            prediction_url=state.get("prediction_url"),
        )

    def _write_kustomization(self) -> None:
        folders = sorted(p.name for p in self.root.iterdir()
                         if p.is_dir() and (p / MANIFESTS_FILE).exists())
        text = yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1",
                               "kind": "Kustomization",
                               "resources": [f"{name}/{MANIFESTS_FILE}" for name in folders]},
                              sort_keys=False)
        _write_atomic(self.root / "kustomization.yaml", text)

    # -- git --------------------------------------------------------------------------------

    def _save(self, message: str, write: Callable[[], None]) -> str | None:
        """Write the change; with git, commit (and push) it. The commit id, if one was made."""
        with self._write_lock:
            if self.repo is None:
                write()
                return None
            return self.repo.commit(message, write)

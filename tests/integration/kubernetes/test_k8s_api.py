"""KubernetesPlugin against the Kubernetes API stand-in, without controllers.

The stand-in API server (`python -m tools.kube serve --no-controllers`) is a
real HTTP server started by this module. With no controllers, nothing runs
pods; where a test needs a finished rollout, `RolloutWriter` plays the
Deployment controller's *status* half only (it writes observedGeneration and
replica counts through the status subresource, as the real controller does).
Pod-level behaviour (pulls, crashes, probes, ingress) is tested in
test_k8s_rollout.py against the harness cluster with controllers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import Settings
from agent.errors import InvalidActionError, PermissionDeniedError
from agent.model import DeploymentSpec, DeploymentState, Status
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.plugin import KubernetesPlugin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
RESTRICTED_TOKEN = "restricted-agent-token"


class StandIn:
    """One stand-in API server process (no controllers, in memory)."""

    def __init__(self, workdir: Path) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.log_path = workdir / "kube.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.kube", "serve", "--host", "127.0.0.1",
                 "--port", "0", "--state-dir", str(workdir / "state"), "--kubeconfig-out",
                 str(self.kubeconfig), "--no-controllers", "--in-memory",
                 "--restricted-token", f"{RESTRICTED_TOKEN}=default/agent"],
                stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"stand-in did not start: {line!r}\n{self.log_path.read_text()}")
        self.url = line.split()[1]

    def restricted_kubeconfig(self, path: Path) -> Path:
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"][0]["user"]["token"] = RESTRICTED_TOKEN
        path.write_text(yaml.safe_dump(config))
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    server = StandIn(tmp_path_factory.mktemp("standin"))
    try:
        yield server
    finally:
        server.stop()


class RolloutWriter:
    """Writes a completed rollout into Deployment status (the controller's status half) and
    keeps one ready pod per replica of the current template (the ReplicaSet controller's and
    kubelet's visible result), removing the pods of other templates."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.enabled = threading.Event()
        self.enabled.set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            if not self.enabled.is_set():
                continue
            try:
                for dep in self.client.list("apps/v1", "Deployment"):
                    self._complete(dep)
            except Exception:
                pass

    def _complete(self, dep: dict[str, Any]) -> None:
        generation = dep["metadata"].get("generation", 1)
        status = dep.get("status") or {}
        if status.get("observedGeneration") == generation:
            return
        replicas = dep["spec"].get("replicas", 1)
        self.client.request(
            "PATCH",
            self.client.path("apps/v1", "Deployment", dep["metadata"]["name"],
                             subresource="status"),
            body={"status": {"observedGeneration": generation, "replicas": replicas,
                             "updatedReplicas": replicas, "readyReplicas": replicas,
                             "availableReplicas": replicas}},
            content_type="application/merge-patch+json",
            query={"fieldManager": "kube-controller-manager"},
        )
        self._pods(dep, replicas)

    def _pods(self, dep: dict[str, Any], replicas: int) -> None:
        template = dep["spec"]["template"]
        labels = template["metadata"]["labels"]
        current = labels[names.LABEL_TEMPLATE_HASH]
        selector = f"{names.LABEL_INSTANCE}={labels[names.LABEL_INSTANCE]}"
        for pod in self.client.list("v1", "Pod", label_selector=selector):
            if pod["metadata"]["labels"].get(names.LABEL_TEMPLATE_HASH) != current:
                self.client.delete("v1", "Pod", pod["metadata"]["name"])
        for n in range(replicas):
            name = f"{dep['metadata']['name']}-{current[:5]}-{n}"
            owner = {"apiVersion": "apps/v1", "kind": "Deployment", "controller": True,
                     "name": dep["metadata"]["name"], "uid": dep["metadata"]["uid"]}
            self.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "labels": labels, "ownerReferences": [owner]},
                "spec": template["spec"]}, exist_ok=True)
            self.client.request(
                "PATCH", self.client.path("v1", "Pod", name, subresource="status"),
                body={"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True"}]}},
                content_type="application/merge-patch+json", query={"fieldManager": "kubelet"})

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def _settings(kubeconfig: Path, **k8s: Any) -> Settings:
    return Settings.model_validate({
        "control_plane": {"environment_id": "env-a"},
        "images": {"builder": "none"},
        "plugin": {"name": "kubernetes", "kubernetes": {
            "kubeconfig": str(kubeconfig), "namespace": "default",
            "outfacing_url_root": "http://127.0.0.1:8080/", "poll_interval_seconds": 0.2,
            "rollout_timeout_seconds": 20, "default_server_profile": "custom", **k8s}},
    })


@pytest.fixture
def plugin(standin: StandIn) -> Iterator[KubernetesPlugin]:
    p = KubernetesPlugin(_settings(standin.kubeconfig))
    _remove_all(p.client)
    writer = RolloutWriter(p.client)
    p.writer = writer  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        writer.close()
        _remove_all(p.client)
        p.close()


def _remove_all(client: KubeClient) -> None:
    for api_version, kind in [("apps/v1", "Deployment"), ("v1", "Service"),
                              ("networking.k8s.io/v1", "Ingress"),
                              ("policy/v1", "PodDisruptionBudget")]:
        for obj in client.list(api_version, kind, label_selector=names.managed_selector()):
            client.delete(api_version, kind, obj["metadata"]["name"])


class Events:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, message: str, level: str = "info", **details: Any) -> None:
        self.messages.append((message, level, details))

    def text(self) -> str:
        return "\n".join(m for m, _, _ in self.messages)


def spec(deployment_id: str = "dep-a", model_id: str = "m1", **extra: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({
        "id": deployment_id, "model": {"id": model_id, "image": f"registry.local/{model_id}:1"},
        **extra})


def _versions(client: KubeClient, name: str, *, deployment_rv: bool = False) -> dict[str, Any]:
    """What must not change when an action is repeated.

    Service and Ingress: resourceVersion. Deployment: generation and content; its
    resourceVersion only with `deployment_rv` (see test_repeat_start_keeps_resource_version).
    """
    out: dict[str, Any] = {}
    for api_version, kind in [("apps/v1", "Deployment"), ("v1", "Service"),
                              ("networking.k8s.io/v1", "Ingress")]:
        obj = client.get(api_version, kind, name)
        assert obj is not None, kind
        meta = obj["metadata"]
        if kind == "Deployment":
            content = {k: v for k, v in meta.items()
                       if k not in ("managedFields", "resourceVersion")}
            out[kind] = (meta.get("generation"), content, obj["spec"],
                         meta["resourceVersion"] if deployment_rv else None)
        else:
            out[kind] = meta["resourceVersion"]
    return out


def test_start_creates_objects_and_repeat_is_a_no_op(plugin: KubernetesPlugin) -> None:
    events = Events()
    result = plugin.start(spec(), events)
    assert result.status == Status.PASSING, result
    assert result.state == DeploymentState.READY
    assert result.data.prediction_url == "http://127.0.0.1:8080/dep-a/predict"
    assert result.data.current_model_id == "m1"
    assert result.data.image == "registry.local/m1:1"
    assert result.data.old_model_in_use is False
    assert any(m.startswith("deploying model m1") for m, _, _ in events.messages)
    deployment = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert deployment is not None
    labels = deployment["metadata"]["labels"]
    assert labels[names.LABEL_MANAGED_BY] == "management-agent"
    assert labels[names.LABEL_ENVIRONMENT_ID] == "env-a"
    managed = deployment["metadata"]["managedFields"]
    assert any(f["manager"] == "management-agent" and f["operation"] == "Apply" for f in managed)

    before = _versions(plugin.client, "mlops-dep-a")
    again = plugin.start(spec(), Events())
    assert again.status == Status.PASSING
    assert _versions(plugin.client, "mlops-dep-a") == before


def test_repeat_start_keeps_resource_version(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(), Events())
    before = _versions(plugin.client, "mlops-dep-a", deployment_rv=True)
    plugin.start(spec(), Events())
    assert _versions(plugin.client, "mlops-dep-a", deployment_rv=True) == before


def test_replace_model_rolls_new_template(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(), Events())
    generation = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")["metadata"][
        "generation"]
    result = plugin.replace_model(spec(model_id="m2"), Events())
    assert result.status == Status.PASSING and result.state == DeploymentState.READY
    assert result.data.current_model_id == "m2" and result.data.old_model_in_use is False
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    assert live["metadata"]["generation"] == generation + 1
    template = live["spec"]["template"]
    assert template["metadata"]["labels"][names.LABEL_MODEL_ID] == "m2"
    assert template["spec"]["containers"][0]["image"] == "registry.local/m2:1"
    assert plugin.status("dep-a").model_id == "m2"


def test_replace_failure_rolls_back_and_reports_old_model(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(), Events())
    plugin.writer.enabled.clear()  # type: ignore[attr-defined]  # the new rollout never completes
    events = Events()
    result = plugin.replace_model(spec(model_id="m2", config={"rollout_timeout_seconds": 1}),
                                  events)
    assert result.status == Status.FAILING
    assert result.data.old_model_in_use is True
    assert result.data.current_model_id == "m1"
    assert result.state == DeploymentState.READY  # the old replicas still serve
    assert "did not become available" in (result.data.message or "")
    assert "rolled back" in (result.data.message or "")
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/m1:1"
    assert live["metadata"]["annotations"][names.ANNOTATION_MODEL_ID] == "m1"


def test_redelivered_replace_rolls_back_to_last_good(plugin: KubernetesPlugin) -> None:
    """An agent crashed mid-replace: the live Deployment already holds the failing model."""
    from agent.plugins.kubernetes.apply import apply_all
    from agent.plugins.kubernetes.manifests import render

    plugin.start(spec(), Events())
    plugin.writer.enabled.clear()  # type: ignore[attr-defined]
    failing = spec(model_id="m2", config={"rollout_timeout_seconds": 1})
    apply_all(plugin.client, render(failing, plugin.k8s, "registry.local/m2:1", "env-a"))
    result = plugin.replace_model(failing, Events())  # the redelivered action
    assert result.data.old_model_in_use is True
    assert result.data.current_model_id == "m1"
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/m1:1"


def test_failed_start_removes_what_it_created(plugin: KubernetesPlugin,
                                              standin: StandIn) -> None:
    plugin.writer.enabled.clear()  # type: ignore[attr-defined]
    result = plugin.start(spec(config={"rollout_timeout_seconds": 1}), Events())
    assert result.status == Status.FAILING and result.state == DeploymentState.ERRORED
    assert "removed the objects it created" in (result.data.message or "")
    assert plugin.client.get("apps/v1", "Deployment", "mlops-dep-a") is None
    assert plugin.client.get("v1", "Service", "mlops-dep-a") is None

    keeping = KubernetesPlugin(_settings(standin.kubeconfig, keep_failed=True))
    try:
        result = keeping.start(spec(config={"rollout_timeout_seconds": 1}), Events())
        assert "kept its objects for debugging" in (result.data.message or "")
        assert keeping.client.get("apps/v1", "Deployment", "mlops-dep-a") is not None
        status = keeping.status("dep-a")
        assert status.state == DeploymentState.LAUNCHING
    finally:
        keeping.close()


def test_relaunch_sets_restarted_at_and_start_keeps_it(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(), Events())
    result = plugin.relaunch(spec(), Events())
    assert result.status == Status.PASSING
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    annotations = live["spec"]["template"]["metadata"]["annotations"]
    assert names.ANNOTATION_RESTARTED_AT in annotations
    before = _versions(plugin.client, "mlops-dep-a")
    plugin.start(spec(), Events())
    assert _versions(plugin.client, "mlops-dep-a") == before


def test_stop_deletes_by_label_and_tolerates_gone(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(replicas=2), Events())
    assert plugin.client.get("policy/v1", "PodDisruptionBudget", "mlops-dep-a") is not None
    result = plugin.stop("dep-a", Events())
    assert result.status == Status.PASSING and result.state == DeploymentState.STOPPED
    for api_version, kind in [("apps/v1", "Deployment"), ("v1", "Service"),
                              ("networking.k8s.io/v1", "Ingress"),
                              ("policy/v1", "PodDisruptionBudget")]:
        assert plugin.client.get(api_version, kind, "mlops-dep-a") is None
    again = plugin.stop("dep-a", Events())
    assert again.state == DeploymentState.STOPPED and again.data.message == "already stopped"


def test_start_prunes_objects_no_longer_rendered(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(replicas=2), Events())
    assert plugin.client.get("policy/v1", "PodDisruptionBudget", "mlops-dep-a") is not None
    plugin.start(spec(replicas=1), Events())
    assert plugin.client.get("policy/v1", "PodDisruptionBudget", "mlops-dep-a") is None


def test_status_list_and_orphans(plugin: KubernetesPlugin) -> None:
    assert plugin.status("nothing").state == DeploymentState.STOPPED
    plugin.start(spec("dep-a"), Events())
    plugin.start(spec("dep-b", model_id="mb"), Events())
    status = plugin.status("dep-a")
    assert status.state == DeploymentState.READY and status.status == Status.PASSING
    assert status.prediction_url == "http://127.0.0.1:8080/dep-a/predict"
    listed = plugin.list()
    assert [s.deployment_id for s in listed] == ["dep-a", "dep-b"]
    env = plugin.environment_status(known_ids={"dep-a"})
    assert env.orphans == ["dep-b"]
    assert env.status == Status.WARNING and "dep-b" in (env.message or "")
    assert plugin.environment_status(known_ids={"dep-a", "dep-b"}).status == Status.PASSING


def test_list_uses_label_selected_list_calls_only(plugin: KubernetesPlugin) -> None:
    plugin.start(spec("dep-a"), Events())
    plugin.start(spec("dep-b", model_id="mb"), Events())
    calls: list[tuple[str, str]] = []
    original = plugin.client.request

    me = threading.get_ident()

    def counting(method: str, path: str, **kwargs: Any) -> Any:
        if threading.get_ident() == me:  # not the RolloutWriter's calls
            calls.append((method, path))
        return original(method, path, **kwargs)

    plugin.client.request = counting  # type: ignore[method-assign]
    try:
        plugin.environment_status(known_ids=set())
    finally:
        plugin.client.request = original  # type: ignore[method-assign]
    assert len(calls) == 2
    assert all(m == "GET" and not path.rstrip("/").endswith(("dep-a", "dep-b"))
               for m, path in calls)


def test_invalid_spec_fails_before_touching_the_cluster(standin: StandIn,
                                                        tmp_path: Path) -> None:
    p = KubernetesPlugin(_settings(tmp_path / "missing-kubeconfig"))
    with pytest.raises(InvalidActionError, match="not a Kubernetes quantity"):
        p.start(spec(resources={"requests": {"memory": "1GB"}}), Events())
    with pytest.raises(InvalidActionError, match="CPU request"):
        p.start(spec(autoscaling={"min_replicas": 1, "max_replicas": 2}), Events())
    assert p._client is None  # no client was even created


def test_rbac_denial_names_the_missing_permission(standin: StandIn, tmp_path: Path) -> None:
    admin = KubeClient(_settings(standin.kubeconfig).plugin.kubernetes)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "agent", "namespace": "default"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"],
                       "verbs": ["get", "list", "watch"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "agent", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "agent"},
               "subjects": [{"kind": "ServiceAccount", "name": "agent",
                             "namespace": "default"}]}
    admin.apply(role)
    admin.apply(binding)
    try:
        restricted = KubernetesPlugin(
            _settings(standin.restricted_kubeconfig(tmp_path / "restricted")))
        with pytest.raises(PermissionDeniedError) as info:
            restricted.start(spec("dep-rbac"), Events())
        assert str(info.value).startswith(
            "forbidden: the agent's service account cannot patch deployments.apps in "
            "namespace default: grant it in the chart's Role (rbac)")
        with pytest.raises(PermissionDeniedError, match="cannot list pods in namespace default"):
            restricted.list()
        restricted.close()
    finally:
        admin.delete("rbac.authorization.k8s.io/v1", "RoleBinding", "agent")
        admin.delete("rbac.authorization.k8s.io/v1", "Role", "agent")
        admin.close()


def test_timing_of_status_polling_is_bounded(plugin: KubernetesPlugin) -> None:
    """A converged start returns promptly (no fixed sleeps on the happy path)."""
    plugin.start(spec(), Events())
    started = time.monotonic()
    plugin.start(spec(), Events())
    assert time.monotonic() - started < 5


def test_client_watch_and_create(plugin: KubernetesPlugin) -> None:
    client = plugin.client
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "watch-me", "namespace": "default"}, "data": {"a": "1"}}
    created = client.create(config_map)
    try:
        again = client.create(config_map, exist_ok=True)
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        seen = []
        for event in client.watch("v1", "ConfigMap", timeout_seconds=1):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if ("ADDED", "watch-me") in seen:
                break
        assert ("ADDED", "watch-me") in seen
    finally:
        client.delete("v1", "ConfigMap", "watch-me")


def test_every_optional_object_is_accepted_and_pruned(standin: StandIn) -> None:
    p = KubernetesPlugin(_settings(
        standin.kubeconfig, network_policy={"enabled": True},
        monitoring={"enabled": True, "image": "registry.local/monitor:1"}))
    writer = RolloutWriter(p.client)
    try:
        d = spec("dep-all", resources={"requests": {"cpu": "100m", "memory": "64Mi"}},
                 autoscaling={"min_replicas": 2, "max_replicas": 4})
        result = p.start(d, Events())
        assert result.status == Status.PASSING, result.data.message
        hpa = p.client.get("autoscaling/v2", "HorizontalPodAutoscaler", "mlops-dep-all")
        assert hpa is not None and hpa["spec"]["maxReplicas"] == 4
        assert p.client.get("policy/v1", "PodDisruptionBudget", "mlops-dep-all") is not None
        assert p.client.get("networking.k8s.io/v1", "NetworkPolicy", "mlops-dep-all") is not None
        live = p.client.get("apps/v1", "Deployment", "mlops-dep-all")
        assert live is not None
        containers = live["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == ["server", "monitoring"]
        p.start(spec("dep-all"), Events())  # no autoscaling, one replica: HPA and PDB go
        assert p.client.get("autoscaling/v2", "HorizontalPodAutoscaler", "mlops-dep-all") is None
        assert p.client.get("policy/v1", "PodDisruptionBudget", "mlops-dep-all") is None
        assert p.stop("dep-all", Events()).state == DeploymentState.STOPPED
        assert p.client.get("networking.k8s.io/v1", "NetworkPolicy", "mlops-dep-all") is None
    finally:
        writer.close()
        p.close()


def test_replace_whose_image_cannot_be_built_keeps_the_old_model(plugin: KubernetesPlugin,
                                                                 standin: StandIn,
                                                                 tmp_path: Path) -> None:
    """The build fails before anything is applied: the running model is untouched and the
    result says so (oldModelInUse, state ready), instead of a bare error."""
    plugin.start(spec(), Events())
    settings = _settings(standin.kubeconfig).model_copy(deep=True)
    settings.images.builder = "direct"
    settings.images.generated_image_repository = "127.0.0.1:9/models"
    settings.plugin.kubernetes.model_delivery = "image"
    builder = KubernetesPlugin(settings)
    try:
        broken = DeploymentSpec.model_validate({
            "id": "dep-a", "model": {"id": "m2", "uri": f"file://{tmp_path}/missing"},
            "config": {"base_image": "registry.local/base:1"}})
        result = builder.replace_model(broken, Events())
    finally:
        builder.close()
    assert result.status == Status.FAILING
    assert (result.state, result.data.old_model_in_use) == (DeploymentState.READY, True)
    assert result.data.current_model_id == "m1"
    assert "m2 was not deployed" in (result.data.message or "")
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    assert live["metadata"]["annotations"][names.ANNOTATION_MODEL_ID] == "m1"


# ---- secrets out of annotations and pod specs (issue 14 items 7, 8) -------------------------

CANARY = "env-canary-5f3a9c"


def _model_secret(client: KubeClient) -> dict[str, str]:
    from agent.plugins.kubernetes import modelsecret

    secret = client.get("v1", "Secret", "mlops-dep-a-model")
    assert secret is not None, "the deployment's Secret"
    return modelsecret.decoded(secret)


def test_last_good_spec_is_in_a_secret_owned_by_the_deployment(plugin: KubernetesPlugin) -> None:
    plugin.start(spec(env={"API_KEY": CANARY}), Events())
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    annotations = live["metadata"]["annotations"]
    assert CANARY not in str(annotations), "annotations keep hashes only"
    assert annotations[names.ANNOTATION_SPEC].startswith("sha256:")
    assert "management-agent.io/last-good-spec-hash" in annotations
    assert CANARY in _model_secret(plugin.client)["last-good-spec"]
    secret = plugin.client.get("v1", "Secret", "mlops-dep-a-model")
    assert secret is not None
    assert [o["uid"] for o in secret["metadata"]["ownerReferences"]] == [live["metadata"]["uid"]]

    plugin.writer.enabled.clear()  # type: ignore[attr-defined]
    failing = spec(model_id="m2", config={"rollout_timeout_seconds": 1})
    result = plugin.replace_model(failing, Events())
    assert result.data.old_model_in_use is True and result.data.current_model_id == "m1"
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "API_KEY", "value": CANARY} in env, "rolled back with its env"

    plugin.stop("dep-a", Events())
    assert plugin.client.get("v1", "Secret", "mlops-dep-a-model") is None, "collected"


def test_deployment_of_an_earlier_agent_still_rolls_back_and_its_spec_is_moved(
        plugin: KubernetesPlugin) -> None:
    """An earlier agent kept the whole spec in the `last-good-spec` annotation."""
    from agent.plugins.kubernetes.apply import apply_all
    from agent.plugins.kubernetes.history import LAST_GOOD_MANAGER
    from agent.plugins.kubernetes.manifests import render

    old = spec(env={"API_KEY": CANARY})
    apply_all(plugin.client, render(old, plugin.k8s, "registry.local/m1:1", "env-a"))
    plugin.client.apply(
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "mlops-dep-a", "namespace": "default", "annotations": {
             names.ANNOTATION_LAST_GOOD_SPEC: old.model_dump_json(exclude_defaults=True),
             names.ANNOTATION_LAST_GOOD_IMAGE: "registry.local/m1:1"}}},
        field_manager=LAST_GOOD_MANAGER)
    plugin.writer.enabled.clear()  # type: ignore[attr-defined]
    result = plugin.replace_model(spec(model_id="m2", config={"rollout_timeout_seconds": 1}),
                                  Events())
    assert result.data.old_model_in_use is True and result.data.current_model_id == "m1"
    live = plugin.client.get("apps/v1", "Deployment", "mlops-dep-a")
    assert live is not None
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/m1:1"
    assert names.ANNOTATION_LAST_GOOD_SPEC not in live["metadata"]["annotations"]
    assert CANARY not in str(live["metadata"]["annotations"])
    assert CANARY in _model_secret(plugin.client)["last-good-spec"]


def test_storage_initializer_reads_the_model_uri_from_the_secret(standin: StandIn) -> None:
    """No URI in the Deployment; the Secret keeps the running pods' and the rollback's URIs."""
    from agent.plugins.kubernetes import modelsecret

    p = KubernetesPlugin(_settings(standin.kubeconfig, model_delivery="storage-initializer",
                                   agent_image="registry.local/agent:1"))
    writer = RolloutWriter(p.client)
    first = "https://store.example.com/m1.tgz?X-Amz-Signature=sig-canary-1"
    second = "https://user:pa55-canary@store.example.com/m2.tgz"

    def uri_spec(model_id: str, uri: str, **config: Any) -> DeploymentSpec:
        return DeploymentSpec.model_validate({
            "id": "dep-a", "server_profile": "custom", "model": {"id": model_id, "uri": uri},
            "config": {"base_image": "registry.local/server:1", **config}})

    try:
        assert p.start(uri_spec("m1", first), Events()).status == Status.PASSING
        writer.enabled.clear()
        p.replace_model(uri_spec("m2", second, rollout_timeout_seconds=1), Events())
        live = p.client.get("apps/v1", "Deployment", "mlops-dep-a")
        assert live is not None
        shown = yaml.safe_dump(live)
        assert "sig-canary-1" not in shown and "pa55-canary" not in shown
        init = live["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"][:3] == ["fetch-model", "--uri-from-env", "MODEL_URI"]
        data = _model_secret(p.client)
        assert data[modelsecret.uri_key(first)] == first, "the rollback target's URI is kept"
        assert data[modelsecret.uri_key(second)] == second
    finally:
        writer.close()
        p.stop("dep-a", Events())
        p.close()


def test_secret_of_a_first_start_whose_deployment_is_refused_is_not_left_behind(
        standin: StandIn, tmp_path: Path) -> None:
    """Nothing owns the URI Secret until the Deployment exists: a refused Deployment (here
    RBAC) must not leave it to outlive every stop."""
    admin = KubeClient(_settings(standin.kubeconfig).plugin.kubernetes)
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "agent", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                       "verbs": ["get", "create", "patch", "delete"]},
                      {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "agent", "namespace": "default"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": "agent"},
               "subjects": [{"kind": "ServiceAccount", "name": "agent",
                             "namespace": "default"}]}
    admin.apply(role)
    admin.apply(binding)
    restricted = KubernetesPlugin(_settings(
        standin.restricted_kubeconfig(tmp_path / "restricted"),
        model_delivery="storage-initializer", agent_image="registry.local/agent:1"))
    try:
        uri_spec = DeploymentSpec.model_validate({
            "id": "dep-orphan", "server_profile": "custom",
            "model": {"id": "m1", "uri": "https://store.example.com/m.tgz?sig=canary-77"},
            "config": {"base_image": "registry.local/server:1"}})
        with pytest.raises(PermissionDeniedError, match="cannot patch deployments"):
            restricted.start(uri_spec, Events())
        assert admin.get("v1", "Secret", "mlops-dep-orphan-model") is None
    finally:
        restricted.close()
        admin.delete("rbac.authorization.k8s.io/v1", "RoleBinding", "agent")
        admin.delete("rbac.authorization.k8s.io/v1", "Role", "agent")
        admin.close()

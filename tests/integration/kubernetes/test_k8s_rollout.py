"""KubernetesPlugin on the harness cluster: real rollouts, pods (podman) and the nginx ingress.

Needs `tools/harness up` with the Kubernetes API stand-in *and* its controllers
(HARNESS_KUBECONFIG and HARNESS_INGRESS_URL in .harness/env or $HARNESS_ENV_FILE); without
it the tests fail under CI=true and are skipped otherwise.
Pods run HARNESS_BASE_IMAGE (python3) with a tiny http.server as the model
server, so most tests need no image builder; the storage-initializer test builds
a stand-in "agent image" with the direct builder.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.config import Settings
from agent.model import DeploymentSpec, DeploymentState, Status
from agent.plugins.kubernetes import names
from agent.plugins.kubernetes.client import KubeClient
from agent.plugins.kubernetes.plugin import KubernetesPlugin
from tests.fixtures import model_server
from tests.fixtures.harness import harness_vars, require

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]

# The tests' fake model server (tests/fixtures/model_server.py): answers /health and POST
# /predict with the model's answer, from $MODEL_PATH/model.json (or /mnt/models) when present,
# else $MODEL_ANSWER. Listens on 0.0.0.0:8080, the custom profile's port.
SERVER = model_server.SOURCE

CRASH = "import sys; print('boom: cannot load the model file', flush=True); sys.exit(3)"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The harness cluster in a fresh namespace (deleted afterwards)."""
    env = require(harness_vars(), "HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL",
                  "HARNESS_BASE_IMAGE")
    namespace = f"k8s-plugin-{secrets.token_hex(3)}"
    settings = _settings(env, namespace)
    admin = KubeClient(settings.plugin.kubernetes)
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        yield {**env, "NAMESPACE": namespace}
    finally:
        admin.delete("v1", "Namespace", namespace)
        admin.close()


def _settings(env: dict[str, str], namespace: str, **k8s: Any) -> Settings:
    return Settings.model_validate({
        "control_plane": {"environment_id": "it-env"},
        "images": {"builder": "none"},
        "plugin": {"name": "kubernetes", "kubernetes": {
            "kubeconfig": env["HARNESS_KUBECONFIG"], "namespace": namespace,
            "outfacing_url_root": env["HARNESS_INGRESS_URL"].rstrip("/") + "/",
            "default_server_profile": "custom", "poll_interval_seconds": 0.5,
            "rollout_timeout_seconds": 180, "fail_fast_seconds": 10,
            "probe_public_url": True,
            # HARNESS_BASE_IMAGE has no USER (root): a kubelet refuses it with runAsNonRoot
            "security": {"run_as_user": 10001}, **k8s}},
    })


@pytest.fixture
def plugin(cluster: dict[str, str]) -> Iterator[KubernetesPlugin]:
    p = KubernetesPlugin(_settings(cluster, cluster["NAMESPACE"]))
    try:
        yield p
    finally:
        p.close()


def events() -> Any:
    seen: list[str] = []

    def report(message: str, level: str = "info", **details: Any) -> None:
        seen.append(message)

    report.seen = seen  # type: ignore[attr-defined]
    return report


def spec(cluster: dict[str, str], deployment_id: str, model_id: str, *,
         image: str | None = None, command: str = SERVER, **extra: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate({
        "id": deployment_id,
        "model": {"id": model_id, "image": image or cluster["HARNESS_BASE_IMAGE"]},
        "env": {"MODEL_ANSWER": f"answer-{model_id}"},
        "config": {"command": ["python3", "-c", command]},
        **extra,
    })


def predict(url: str, timeout: float = 60) -> dict[str, Any]:
    """POST to the prediction URL, retrying while the ingress catches up."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = requests.post(url, json={"instances": [[1, 2]]}, timeout=5)
            if response.status_code == 200:
                return dict(response.json())
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"no prediction from {url}: {last}")


def test_start_serves_through_ingress_and_repeat_is_a_no_op(
        plugin: KubernetesPlugin, cluster: dict[str, str]) -> None:
    result = plugin.start(spec(cluster, "it-start", "m1"), events())
    assert result.status == Status.PASSING, result.data.message
    assert result.state == DeploymentState.READY
    url = result.data.prediction_url
    assert url == f"{cluster['HARNESS_INGRESS_URL'].rstrip('/')}/it-start/predict"
    answer = predict(url)
    assert answer["predictions"] == ["answer-m1"]
    assert answer["path"] == "/predict"  # the ingress rewrote /<id>/predict to /predict

    deployment = plugin.client.get("apps/v1", "Deployment", "mlops-it-start")
    assert deployment is not None
    generation = deployment["metadata"]["generation"]
    again = plugin.start(spec(cluster, "it-start", "m1"), events())
    assert again.status == Status.PASSING
    deployment = plugin.client.get("apps/v1", "Deployment", "mlops-it-start")
    assert deployment is not None and deployment["metadata"]["generation"] == generation

    status = plugin.status("it-start")  # probes the public health URL too
    assert status.state == DeploymentState.READY, status.message
    assert status.prediction_url == url
    plugin.stop("it-start", events())


def test_replace_success_then_unpullable_image_rolls_back(
        plugin: KubernetesPlugin, cluster: dict[str, str]) -> None:
    first = plugin.start(spec(cluster, "it-replace", "m1"), events())
    assert first.status == Status.PASSING, first.data.message
    url = first.data.prediction_url
    assert url is not None

    replaced = plugin.replace_model(spec(cluster, "it-replace", "m2"), events())
    assert replaced.status == Status.PASSING, replaced.data.message
    assert replaced.data.current_model_id == "m2" and replaced.data.old_model_in_use is False
    assert predict(url)["predictions"] == ["answer-m2"]

    bad_image = f"{cluster['HARNESS_REGISTRY']}/does-not/exist:missing"
    report = events()
    failed = plugin.replace_model(spec(cluster, "it-replace", "m3", image=bad_image), report)
    assert failed.status == Status.FAILING
    assert failed.data.old_model_in_use is True
    assert failed.data.current_model_id == "m2"
    assert failed.state == DeploymentState.READY
    message = failed.data.message or ""
    print(message)
    assert bad_image in message and "cannot be pulled" in message, message
    assert "rolled back" in message
    assert predict(url)["predictions"] == ["answer-m2"]  # the old model kept serving
    status = plugin.status("it-replace")
    assert status.model_id == "m2" and status.state == DeploymentState.READY, status.message
    plugin.stop("it-replace", events())


def test_crashing_server_is_explained_and_cleaned_up(
        plugin: KubernetesPlugin, cluster: dict[str, str]) -> None:
    result = plugin.start(spec(cluster, "it-crash", "m1", command=CRASH), events())
    assert result.status == Status.FAILING and result.state == DeploymentState.ERRORED
    message = result.data.message or ""
    print(message)
    assert "boom: cannot load the model file" in message, message
    assert "removed the objects it created" in message
    assert plugin.client.get("apps/v1", "Deployment", "mlops-it-crash") is None


def test_stop_removes_pods_and_route(plugin: KubernetesPlugin, cluster: dict[str, str]) -> None:
    result = plugin.start(spec(cluster, "it-stop", "m1"), events())
    assert result.status == Status.PASSING, result.data.message
    stopped = plugin.stop("it-stop", events())
    assert stopped.state == DeploymentState.STOPPED and stopped.data.message == "stopped"
    selector = f"{names.LABEL_INSTANCE}=it-stop"
    assert plugin.client.list("v1", "Pod", label_selector=selector) == []
    assert plugin.status("it-stop").state == DeploymentState.STOPPED
    # the ingress controller drops the route asynchronously, as on a real cluster
    deadline = time.monotonic() + 30
    while True:
        response = requests.post(result.data.prediction_url or "", json={}, timeout=5)
        if response.status_code in (404, 503) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code in (404, 503)


def test_environment_status_reports_orphans(plugin: KubernetesPlugin,
                                            cluster: dict[str, str]) -> None:
    for deployment_id in ("it-env-a", "it-env-b"):
        assert plugin.start(spec(cluster, deployment_id, "m1"), events()).status == \
            Status.PASSING
    env = plugin.environment_status(known_ids={"it-env-a"})
    assert "it-env-b" in env.orphans and "it-env-a" not in env.orphans
    states = {d.deployment_id: d.state for d in env.deployments}
    assert states["it-env-a"] == DeploymentState.READY
    for deployment_id in ("it-env-a", "it-env-b"):
        plugin.stop(deployment_id, events())


def test_openshift_route_mode_serves_predictions(cluster: dict[str, str]) -> None:
    settings = _settings(cluster, cluster["NAMESPACE"], ingress_mode="openshift-route")
    p = KubernetesPlugin(settings)
    try:
        result = p.start(spec(cluster, "it-route", "m1"), events())
        assert result.status == Status.PASSING, result.data.message
        assert p.client.get("route.openshift.io/v1", "Route", "mlops-it-route") is not None
        assert p.client.get("networking.k8s.io/v1", "Ingress", "mlops-it-route") is None
        assert predict(result.data.prediction_url or "")["predictions"] == ["answer-m1"]
        stopped = p.stop("it-route", events())
        assert stopped.state == DeploymentState.STOPPED
        assert p.client.get("route.openshift.io/v1", "Route", "mlops-it-route") is None
    finally:
        p.close()


# A stand-in for the agent's image in the init container: `management-agent fetch-model
# --uri-from-env VAR DEST --credentials-dir DIR` (the URI from the deployment's Secret)
# fetching a JSON bundle {file name: text} over HTTP. (The real agent image cannot be built
# here: no container engine builds the Dockerfile.) It proves the rendering: init container,
# shared emptyDir at the model path, credentials mount.
FAKE_AGENT = r"""#!/usr/bin/env python3
import json, os, sys, urllib.request
args = sys.argv[1:]
assert args[:2] == ["fetch-model", "--uri-from-env"], args
uri, dest = os.environ[args[2]], args[3]
creds = args[args.index("--credentials-dir") + 1] if "--credentials-dir" in args else None
token = open(os.path.join(creds, "token")).read().strip() if creds else "none"
bundle = json.load(urllib.request.urlopen(uri))
os.makedirs(dest, exist_ok=True)
for name, text in bundle.items():
    with open(os.path.join(dest, name), "w") as handle:
        handle.write(text.replace("@TOKEN@", token))
print("fetched", uri, "into", dest, flush=True)
"""


@pytest.fixture
def bundle_server() -> Iterator[str]:
    """An HTTP server serving the model bundle the init container fetches, on the harness
    address (a pod has its own network: 127.0.0.1 there is the pod itself)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps({"server.py": SERVER,
                       "model.json": json.dumps({"answer": "fetched-@TOKEN@"})}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    host = harness_vars().get("HARNESS_HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}/bundle.json"
    finally:
        server.shutdown()
        server.server_close()


def test_storage_initializer_fetches_model_into_base_image(
        cluster: dict[str, str], bundle_server: str, tmp_path: Path) -> None:
    from agent.images import build_model_image

    tool = tmp_path / "agent-bin"
    tool.mkdir()
    (tool / "management-agent").write_text(FAKE_AGENT)
    (tool / "management-agent").chmod(0o755)
    build_settings = Settings.model_validate({"artifacts": {"file_roots": [str(tool)]}, "images": {
        "builder": "direct",
        "generated_image_repository": f"{cluster['HARNESS_REGISTRY']}/k8s-plugin-it",
        "insecure_registries": [cluster["HARNESS_REGISTRY"]]}})
    tool_spec = DeploymentSpec.model_validate(
        {"id": "fake-agent", "model": {"id": "fake-agent", "uri": f"file://{tool}"}})
    agent_image = build_model_image(tool_spec, cluster["HARNESS_BASE_IMAGE"], "/usr/local/bin",
                                    build_settings, lambda *a, **k: None).reference

    settings = _settings(cluster, cluster["NAMESPACE"], model_delivery="storage-initializer",
                         agent_image=agent_image)
    p = KubernetesPlugin(settings)
    try:
        p.client.apply({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "bundle-creds", "namespace": cluster["NAMESPACE"]},
                        "stringData": {"token": "s3cr3t"}})
        deployment = DeploymentSpec.model_validate({
            "id": "it-init",
            "model": {"id": "m1", "uri": bundle_server, "credentials_secret": "bundle-creds"},
            "config": {"base_image": cluster["HARNESS_BASE_IMAGE"],
                       "command": ["python3", "/mnt/models/server.py"]},
        })
        result = p.start(deployment, events())
        assert result.status == Status.PASSING, result.data.message
        assert result.data.image == cluster["HARNESS_BASE_IMAGE"]  # the base image, unchanged
        answer = predict(result.data.prediction_url or "")
        assert answer["predictions"] == ["fetched-s3cr3t"]
        p.stop("it-init", events())
    finally:
        p.client.delete("v1", "Secret", "bundle-creds")
        p.close()

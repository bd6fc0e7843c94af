"""The Kaniko builder end to end on the harness cluster.

The harness cluster is the project's Kubernetes API stand-in with its
controllers: a Job controller, a podman "node" and a Kaniko shim that
builds with buildah. The build Job is rendered by `agent.images.kaniko` and
created and watched through the agent's own KubeClient. The fetch step runs
the fetcher image.

The agent image is not published on these machines, so the fetcher image is
made here. It is the harness base image plus a 20-line `management-agent`
script that implements only `fetch-model --uri-from-env VAR DEST` over http. That script
stands in for the artifacts helper's real command.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from images_support import Registries

from agent.config import Settings
from agent.errors import BuildError
from agent.images import build_model_image
from agent.images.kaniko import job_name
from agent.images.layer import DirectorySource
from agent.model import DeploymentSpec, ModelRef

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN = uuid.uuid4().hex[:8]

FETCHER = '''#!/usr/bin/env python3
"""Stand-in for `management-agent fetch-model --uri-from-env VAR DEST` (tests only)."""
import os, sys, urllib.request
args = [a for a in sys.argv[1:]]
assert args[:2] == ["fetch-model", "--uri-from-env"], args
uri, dest = os.environ[args[2]], args[3]
os.makedirs(dest, exist_ok=True)
name = uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
with urllib.request.urlopen(uri, timeout=30) as answer, open(os.path.join(dest, name), "wb") as out:
    out.write(answer.read())
print("fetched", uri.split("?", 1)[0], "->", dest)
'''


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves tmp_path/served over http on the harness address (pods reach it there)."""
    from tests.fixtures.harness import env_file, read_env

    host = (read_env() if env_file().exists() else {}).get("HARNESS_HOST", "127.0.0.1")
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def fetcher_image(registries: Registries, tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.fixtures.harness import harness_vars, require

    base = require(harness_vars(), "HARNESS_BASE_IMAGE")["HARNESS_BASE_IMAGE"]
    bin_dir = tmp_path_factory.mktemp("fetcher")
    script = bin_dir / "management-agent"
    script.write_text(FETCHER)
    script.chmod(0o755)
    settings = Settings.model_validate({"images": {
        "generated_image_repository": f"{registries.plain}/test/fetcher",
        "insecure_registries": [registries.plain]}})
    spec = DeploymentSpec(id="fetcher", model=ModelRef(id="fetcher", uri="file:///x"))
    built = build_model_image(spec, base, "/usr/local/bin", settings, lambda *a, **k: None,
                              source=DirectorySource(bin_dir)).reference
    return _as_user(built, "10001", tmp_path_factory.mktemp("fetcher-oci") / "layout")


def _as_user(reference: str, user: str, layout: Path) -> str:
    """`reference` re-tagged with its config's User set, like the agent's own image (USER 10001):
    the Job's fetch-model container says runAsNonRoot, which a kubelet refuses for a root image."""
    plain = ["--src-tls-verify=false", "--dest-tls-verify=false"]
    subprocess.run(["skopeo", "copy", "--quiet", *plain, f"docker://{reference}",
                    f"oci:{layout}:img"], check=True, capture_output=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:img", "--config.user", user],
                   check=True, capture_output=True)
    target = f"{reference}-nonroot"
    subprocess.run(["skopeo", "copy", "--quiet", *plain, f"oci:{layout}:img",
                    f"docker://{target}"], check=True, capture_output=True)
    return target


def _kube_client(kube: Any, namespace: str) -> Any:
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    return KubeClient(KubernetesSettings(kubeconfig=kube.kubeconfig, namespace=namespace))


def _settings(registries: Registries, fetcher: str, namespace: str, base: str,
              **kaniko: Any) -> Settings:
    return Settings.model_validate({
        "plugin": {"kubernetes": {"namespace": namespace}},
        "images": {
            "builder": "kaniko",
            "generated_image_repository": f"{registries.plain}/models/kaniko-{RUN}",
            "insecure_registries": [registries.plain],
            "kaniko": {"fetcher_image": fetcher, "poll_interval_seconds": 1,
                       "timeout_seconds": 600, **kaniko},
        },
    })


def test_kaniko_job_builds_pushes_and_is_reused(
        registries: Registries, kube: Any, kube_namespaces: Callable[[str], str],
        fetcher_image: str, base_images: dict[str, str],
        model_server: tuple[str, Path]) -> None:
    url, served = model_server
    (served / "model.json").write_text(json.dumps({"coef": [1, 2, 3], "run": RUN}))
    namespace = kube_namespaces("kaniko")
    client = _kube_client(kube, namespace)
    settings = _settings(registries, fetcher_image, namespace, base_images["plain-oci"])
    # a signed URL: its signature must show in no Job spec (it is in the build's Secret)
    signed = f"{url}/model.json?X-Amz-Signature=sig{RUN}"
    spec = DeploymentSpec(id="kan", model=ModelRef(id="m-kaniko", uri=signed))
    events: list[str] = []
    built = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                              lambda m, *a, **k: events.append(m), kube=client)
    assert not built.reused and built.digest.startswith("sha256:")
    assert any(e.startswith("image build job model-build-m-") for e in events)

    info = json.loads(subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{built.reference}"],
        check=True, capture_output=True, text=True).stdout)
    assert info["Labels"]["io.management-agent.model-id"] == "m-kaniko"
    assert "MODEL_PATH=/mnt/models" in info["Env"]
    job = client.get("batch/v1", "Job", job_name(built.reference), namespace)
    assert job is not None
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert f"sig{RUN}" not in json.dumps(job) and f"sig{RUN}" not in " ".join(events)
    secret = client.get("v1", "Secret", f"{job['metadata']['name']}-model", namespace)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    # the garbage collector removes the build's Secret with its Job (e.g. by TTL)
    client.delete("batch/v1", "Job", job["metadata"]["name"], namespace)
    assert client.get("v1", "Secret", f"{job['metadata']['name']}-model", namespace) is None

    again = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                              lambda *a, **k: None, kube=client)
    assert again.reused and again.digest == built.digest


def test_kaniko_where_pod_security_restricted_is_enforced_fails_at_once_saying_why(
        registries: Registries, kube: Any, kube_namespaces: Callable[[str], str],
        fetcher_image: str, base_images: dict[str, str],
        model_server: tuple[str, Path]) -> None:
    """The stand-in's admission refuses the root executor; its Job controller records
    FailedCreate as the real one does (and retries until the deadline, 600 s here)."""
    import time

    url, served = model_server
    (served / "model.json").write_text(json.dumps({"run": RUN}))
    namespace = kube_namespaces("kaniko-psa")
    client = _kube_client(kube, namespace)
    client.patch("v1", "Namespace", namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    settings = _settings(registries, fetcher_image, namespace, base_images["plain-oci"])
    spec = DeploymentSpec(id="kanpsa", model=ModelRef(id="m-psa", uri=f"{url}/model.json"))
    started = time.monotonic()
    with pytest.raises(BuildError) as caught:
        build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                          lambda *a, **k: None, kube=client,
                          source=_FixedDigest(f"sha256:{'2' * 56}{RUN}"))
    took = time.monotonic() - started
    text = str(caught.value)
    assert 'violates PodSecurity "restricted:latest"' in text, text
    assert "images.builder: direct" in text
    assert took < 120, f"reported after {took:.0f}s: the Job's deadline, not the refusal"
    assert not client.list("batch/v1", "Job", namespace), "the refused Job is deleted"


def test_kaniko_failure_reports_reason_and_log(
        registries: Registries, kube: Any, kube_namespaces: Callable[[str], str],
        fetcher_image: str, base_images: dict[str, str],
        model_server: tuple[str, Path]) -> None:
    """The model URL answers 404: the fetch step fails and its log reaches the BuildError.

    Once the model is there, the retry deletes the failed Job and builds (it does not
    wait for the failed Job's TTL)."""
    url, served = model_server
    namespace = kube_namespaces("kaniko")
    client = _kube_client(kube, namespace)
    settings = _settings(registries, fetcher_image, namespace, base_images["plain-oci"],
                         backoff_limit=0)
    spec = DeploymentSpec(id="kanfail", model=ModelRef(id="m-missing",
                                                       uri=f"{url}/missing-{RUN}.json"))
    with pytest.raises(BuildError) as caught:
        build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                          lambda *a, **k: None, kube=client,
                          source=_FixedDigest(f"sha256:{'1' * 56}{RUN}"))
    text = str(caught.value)
    assert "image build job" in text and "fetch-model" in text
    assert "404" in text or "Not Found" in text

    (served / f"missing-{RUN}.json").write_text(json.dumps({"now": "here", "run": RUN}))
    events: list[str] = []
    built = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                              lambda m, *a, **k: events.append(m), kube=client,
                              source=_FixedDigest(f"sha256:{'1' * 56}{RUN}"))
    assert not built.reused and built.digest.startswith("sha256:")
    assert any("failed before" in e for e in events)


class _FixedDigest(DirectorySource):
    """A source whose digest is known without reading (the model does not exist)."""

    def __init__(self, digest: str) -> None:
        super().__init__(Path("/nonexistent"), digest=digest)


def _secret_and_ca(client: Any, namespace: str, registries: Registries, password: str) -> None:
    import base64

    auth = base64.b64encode(f"{registries.tls_user}:{password}".encode()).decode()
    config = json.dumps({"auths": {registries.tls: {"auth": auth}}})
    client.create({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                   "metadata": {"name": "push-creds", "namespace": namespace},
                   "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}})
    client.create({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "registry-cas", "namespace": namespace},
                   "data": {"ca.crt": registries.ca_cert.read_text()}})


@pytest.mark.parametrize("good", [True, False], ids=["credentials", "wrong-credentials"])
def test_kaniko_pushes_to_tls_registry_with_dockerconfigjson_secret_and_ca(
        registries: Registries, kube: Any, kube_namespaces: Callable[[str], str],
        fetcher_image: str, base_images: dict[str, str],
        model_server: tuple[str, Path], good: bool) -> None:
    url, served = model_server
    (served / "model.json").write_text(json.dumps({"tls": True, "run": RUN, "good": good}))
    namespace = kube_namespaces("kaniko")
    client = _kube_client(kube, namespace)
    _secret_and_ca(client, namespace, registries,
                   registries.tls_password if good else "wrong-password-xyz")
    settings = Settings.model_validate({
        "plugin": {"kubernetes": {"namespace": namespace}},
        "images": {
            "builder": "kaniko",
            "generated_image_repository": f"{registries.tls}/models/kaniko-tls-{RUN}",
            "insecure_registries": [registries.plain],
            "ca_bundle": str(registries.ca_cert),
            "credentials": {"provider": "basic", "username": registries.tls_user,
                            "password": registries.tls_password},
            "kaniko": {"fetcher_image": fetcher_image, "poll_interval_seconds": 1,
                       "backoff_limit": 0, "secret_name": "push-creds",
                       "registry_certificates": {registries.tls: "ca.crt"},
                       "registry_certificates_config_map": "registry-cas"},
        },
    })
    spec = DeploymentSpec(id="kantls", model=ModelRef(id=f"m-tls-{good}",
                                                      uri=f"{url}/model.json"))
    if good:
        built = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                                  lambda *a, **k: None, kube=client)
        assert built.reference.startswith(f"{registries.tls}/") and not built.reused
        return
    with pytest.raises(BuildError) as caught:
        build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                          lambda *a, **k: None, kube=client)
    text = str(caught.value)
    assert f"could not authenticate to {registries.tls}" in text
    assert "wrong-password-xyz" not in text


def test_kaniko_trusts_the_one_tls_ca_setting(
        registries: Registries, kube: Any, kube_namespaces: Callable[[str], str],
        fetcher_image: str, base_images: dict[str, str],
        model_server: tuple[str, Path]) -> None:
    """No images.ca_bundle, no registry_certificates: tls.ca_bundle (the agent) and
    tls.ca_config_map (the Job) alone let Kaniko push to the private-CA registry."""
    url, served = model_server
    (served / "model.json").write_text(json.dumps({"tls-ca": True, "run": RUN}))
    namespace = kube_namespaces("kaniko")
    client = _kube_client(kube, namespace)
    _secret_and_ca(client, namespace, registries, registries.tls_password)
    settings = Settings.model_validate({
        "plugin": {"kubernetes": {"namespace": namespace}},
        "tls": {"ca_bundle": str(registries.ca_cert), "ca_config_map": "registry-cas"},
        "images": {
            "builder": "kaniko",
            "generated_image_repository": f"{registries.tls}/models/kaniko-ca-{RUN}",
            "insecure_registries": [registries.plain],
            "credentials": {"provider": "basic", "username": registries.tls_user,
                            "password": registries.tls_password},
            "kaniko": {"fetcher_image": fetcher_image, "poll_interval_seconds": 1,
                       "backoff_limit": 0, "secret_name": "push-creds"},
        },
    })
    spec = DeploymentSpec(id="kanca", model=ModelRef(id="m-tls-ca", uri=f"{url}/model.json"))
    built = build_model_image(spec, base_images["plain-oci"], "/mnt/models", settings,
                              lambda *a, **k: None, kube=client)
    assert built.reference.startswith(f"{registries.tls}/") and not built.reused

"""Secret canary (issue 14, "Tests"): no credential shows up anywhere it could be read.

One run, shared by the tests of this module: the real agent (`management-agent
run`) and the reference control plane (a real process) deploy, replace and stop
a model on the harness's Kubernetes stand-in, with a distinct random canary in
every credential the harness can check:

- the control plane's agent and admin tokens;
- the push password of the harness's TLS registry (generated images go there,
  pods pull them with an imagePullSecret);
- the S3 secret key of SeaweedFS (deploy from `s3://`, keys in a credentials Secret);
- a GCS service-account key and the access token it is exchanged for (replace
  from `gs://` on fake-gcs, the token minted by a local OAuth stand-in);
- the MLflow token (replace from `models:/` on the harness MLflow server);
- the signature of a presigned S3 URL (replace from that URL);
- the git token of a second agent, with the GitOps (filesystem) plugin, pushing
  to a git smart-HTTP remote that accepts only that token.

Then every place a reader could look is searched: the agent's and the control
plane's logs, the events and action results, every Kubernetes object but
Secrets (every listable kind of the stand-in), the git history pushed, and the
generated images' config and history. Each sink is its own test, so a leak
names the sink and the canaries found there. The S3 access key id is the
harness's fixed identity (`harness`), not a secret, and not a canary.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

from tests.e2e.conftest import RESTRICTED
from tests.e2e.test_e2e_kubernetes import ACTION_TIMEOUT, Agent, agent_config
from tests.fixtures import model_server
from tests.fixtures.controlplane import ControlPlaneServer
from tests.fixtures.harness import harness_vars, require
from tests.fixtures.kube import harness_namespace
from tests.fixtures.mlflow_models import register_model
from tests.security.canary_support import (
    GitServer,
    TokenServer,
    find_canaries,
    service_account_key,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "model-creds"


def canary() -> str:
    return "cnry" + secrets.token_hex(12)  # 28 characters, distinct per call


@dataclass
class Run:
    """What the run left behind, by sink."""

    canaries: dict[str, str]
    sinks: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _model_files(name: str, answer: float) -> dict[str, bytes]:
    return {"server.py": model_server.SOURCE.encode(),
            "model.json": json.dumps({"name": name, "answer": answer}).encode()}


def _targz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _stores(env: dict[str, str], prefix: str, gcs_token_uri: str) -> tuple[dict[str, str], str]:
    """Upload the four model versions; returns their URIs and the GCS key JSON."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=env["HARNESS_S3_ENDPOINT"],
                      config=Config(signature_version="s3v4"),
                      region_name=env["HARNESS_S3_REGION"],
                      aws_access_key_id=env["HARNESS_S3_ACCESS_KEY"],
                      aws_secret_access_key=env["HARNESS_S3_SECRET_KEY"])
    bucket = env["HARNESS_S3_BUCKET"]
    for name, data in _model_files("v1-s3", 1.0).items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/v1/{name}", Body=data)
    gcs = env["HARNESS_GCS_ENDPOINT"]
    for name, data in _model_files("v2-gcs", 2.0).items():
        requests.post(f"{gcs}/upload/storage/v1/b/{env['HARNESS_GCS_BUCKET']}/o",
                      params={"uploadType": "media", "name": f"{prefix}/v2/{name}"}, data=data,
                      timeout=30).raise_for_status()
    registered, _ = register_model(env["HARNESS_MLFLOW_URI"],
                                   _model_files("v3-mlflow", 3.0), "canary")
    models_uri = f"models:/{registered}/1"
    s3.put_object(Bucket=bucket, Key=f"{prefix}/v4/model.tar.gz",
                  Body=_targz(_model_files("v4-signed", 4.0)))
    signed = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": f"{prefix}/v4/model.tar.gz"},
        ExpiresIn=3600)
    key_json, _ = service_account_key(gcs_token_uri)
    return {"s3": f"s3://{bucket}/{prefix}/v1/",
            "gcs": f"gs://{env['HARNESS_GCS_BUCKET']}/{prefix}/v2/",
            "mlflow": models_uri, "signed": signed}, key_json


def _kube_secrets(cluster: dict[str, str], run: Run, key_json: str) -> list[str]:
    """The model credentials Secret and the pull Secret; returns the pull Secret names."""
    from agent.plugins.kubernetes.client import KubeClient
    from agent.plugins.kubernetes.settings import KubernetesSettings

    c = run.canaries
    registry = cluster["HARNESS_REGISTRY_TLS"]
    login = base64.b64encode(f"harness:{c['registry password']}".encode()).decode()
    client = KubeClient(KubernetesSettings(kubeconfig=Path(cluster["HARNESS_KUBECONFIG"]),
                                           namespace=cluster["NAMESPACE"]))
    try:
        client.apply({"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": SECRET, "namespace": cluster["NAMESPACE"]},
                      "stringData": {
                          "AWS_ACCESS_KEY_ID": cluster["HARNESS_S3_ACCESS_KEY"],
                          "AWS_SECRET_ACCESS_KEY": c["S3 secret key"],
                          "AWS_ENDPOINT_URL": cluster["HARNESS_S3_ENDPOINT"],
                          "AWS_DEFAULT_REGION": cluster["HARNESS_S3_REGION"],
                          "gcs-key.json": key_json,
                          "MLFLOW_TRACKING_TOKEN": c["MLflow token"]}})
        client.apply({"apiVersion": "v1", "kind": "Secret", "type":
                      "kubernetes.io/dockerconfigjson",
                      "metadata": {"name": "pull", "namespace": cluster["NAMESPACE"]},
                      "stringData": {".dockerconfigjson": json.dumps(
                          {"auths": {registry: {"auth": login}}})}})
    finally:
        client.close()
    return ["pull"]


def _kube_agent_config(path: Path, cluster: dict[str, str], cp: ControlPlaneServer, env_id: str,
                       token_file: Path, password_file: Path) -> Path:
    agent_config(path, cluster, cp.url, env_id, "unused")
    config = yaml.safe_load(path.read_text())
    config["control_plane"].pop("token")
    config["control_plane"]["token_file"] = str(token_file)
    config["images"].update({
        "generated_image_repository": f"{cluster['HARNESS_REGISTRY_TLS']}/canary",
        "ca_bundle": cluster["HARNESS_CA_CERT"],
        "credentials": {"provider": "basic", "username": "harness",
                        "password_file": str(password_file)},
        "base_credentials": {"provider": "anonymous"},
    })
    config["artifacts"].update({"gcs_endpoint_url": cluster["HARNESS_GCS_ENDPOINT"],
                                "mlflow_tracking_uri": cluster["HARNESS_MLFLOW_URI"]})
    config["plugin"]["kubernetes"]["image_pull_secrets"] = ["pull"]
    path.write_text(yaml.safe_dump(config))
    return path


def _gitops_agent_config(path: Path, cp: ControlPlaneServer, env_id: str, token_file: Path,
                         remote: str, git_token_file: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "control_plane": {"url": cp.url, "environment_id": env_id,
                          "token_file": str(token_file), "poll_interval_seconds": 0.5,
                          "heartbeat_interval_seconds": 2},
        "health": {"enabled": False},
        "images": {"builder": "none"},
        "plugin": {"name": "filesystem", "filesystem": {
            "output_dir": str(path.parent / "gitops-work"),
            "git": {"enabled": True, "remote": remote, "token_file": str(git_token_file)}},
            "kubernetes": {"model_delivery": "storage-initializer",
                           "agent_image": "registry.local/agent:1"}},
    }))
    return path


def _drive(cp: ControlPlaneServer, env_id: str, models: list[dict[str, Any]], run: Run,
           agent: Agent, snapshot: Callable[[], None] = lambda: None) -> None:
    """Deploy the first model, replace it by each of the others, stop; each action awaited,
    then `snapshot()` taken (the stop deletes what the others created)."""
    for n, model in enumerate([*models, {}]):
        if n == 0:
            action = cp.admin.deploy(env_id, {"id": "canary", "model": model})["action"]
        elif model:
            action = cp.admin.replace(env_id, "canary", {"model": model})["action"]
        else:
            action = cp.admin.stop(env_id, "canary")["action"]
        finished = cp.admin.wait_action(env_id, action["id"], timeout=ACTION_TIMEOUT)
        result = finished.get("result") or {}
        if result.get("status") != "passing" and model:
            run.failures.append(f"{action['type']} {model['id']}: {result}")
        if finished["state"] != "completed":
            run.failures.append(f"{action['type']} did not complete: {agent.log()[-2000:]}")
        snapshot()


def _kubectl(cluster: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = cluster.get("HARNESS_KUBECTL") or "kubectl"
    return subprocess.run([kubectl, "--kubeconfig", cluster["HARNESS_KUBECONFIG"], *args],
                          capture_output=True, text=True, timeout=120)


def _kube_objects(cluster: dict[str, str]) -> str:
    """Every object of every listable kind but Secrets, in every namespace, as JSON."""
    kinds = _kubectl(cluster, "api-resources", "--verbs=list", "-o", "name").stdout.split()
    assert "deployments.apps" in kinds, kinds
    dumps = []
    for kind in kinds:
        if kind.split(".")[0] == "secrets":
            continue
        listed = _kubectl(cluster, "get", kind, "-A", "-o", "json")
        assert listed.returncode == 0, (kind, listed.stderr)
        dumps.append(listed.stdout)
    return "\n".join(dumps)


def _image_configs(cluster: dict[str, str], images: set[str], password: str) -> str:
    """`skopeo inspect --config` (config and history) of each generated image."""
    out = []
    for image in sorted(images):
        shown = subprocess.run(
            ["skopeo", "inspect", "--config", "--creds", f"harness:{password}", "--cert-dir",
             cluster["HARNESS_CERT_DIR"], f"docker://{image}"],
            capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, (image, shown.stderr)
        out.append(shown.stdout)
    return "\n".join(out)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    env = require(harness_vars(), "HARNESS_KUBECONFIG", "HARNESS_INGRESS_URL",
                  "HARNESS_BASE_IMAGE", "HARNESS_REGISTRY", "HARNESS_REGISTRY_TLS_PASSWORD",
                  "HARNESS_S3_SECRET_KEY", "HARNESS_GCS_ENDPOINT", "HARNESS_MLFLOW_URI")
    work = tmp_path_factory.mktemp("canary")
    run = Run({"registry password": env["HARNESS_REGISTRY_TLS_PASSWORD"],
               "S3 secret key": env["HARNESS_S3_SECRET_KEY"], "MLflow token": canary(),
               "GCS access token": canary(), "git token": canary()})
    c = run.canaries
    (work / "git").mkdir()
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(work / "git/models.git")],
                   check=True)
    git_server = GitServer(work / "git", c["git token"])
    token_server = TokenServer(c["GCS access token"])
    cp = ControlPlaneServer(work / "control-plane")
    agents: list[Agent] = []
    try:
        cp.start()
        c["admin token"] = cp.admin_token
        with harness_namespace(env, "canary", RESTRICTED) as cluster:
            uris, key_json = _stores(env, f"canary-{secrets.token_hex(4)}",
                                     f"{token_server.url}/token")
            c["GCS private key"] = json.loads(key_json)["private_key"].splitlines()[5]
            c["signed URL signature"] = parse_qs(urlsplit(uris["signed"]).query)[
                "X-Amz-Signature"][0]
            _kube_secrets(cluster, run, key_json)
            kube_env, c["control-plane token"] = cp.create_environment()
            gitops_env, c["control-plane token (gitops)"] = cp.create_environment()
            files = {}
            for name, value in (("kube-token", c["control-plane token"]),
                                ("gitops-token", c["control-plane token (gitops)"]),
                                ("registry-password", c["registry password"]),
                                ("git-token", c["git token"])):
                files[name] = work / name
                files[name].write_text(value + "\n")
            agents.append(Agent(_kube_agent_config(
                work / "kube-agent.yaml", cluster, cp, kube_env, files["kube-token"],
                files["registry-password"]), work / "kube-agent.log"))
            agents.append(Agent(_gitops_agent_config(
                work / "gitops-agent.yaml", cp, gitops_env, files["gitops-token"],
                f"{git_server.url}/models.git", files["git-token"]), work / "gitops-agent.log"))
            models = [{"id": "v1-s3", "uri": uris["s3"], "credentials_secret": SECRET},
                      {"id": "v2-gcs", "uri": uris["gcs"], "credentials_secret": SECRET},
                      {"id": "v3-mlflow", "uri": uris["mlflow"], "credentials_secret": SECRET},
                      {"id": "v4-signed", "uri": uris["signed"]}]
            dumps: list[str] = []
            _drive(cp, kube_env, models, run, agents[0],
                   lambda: dumps.append(_kube_objects(cluster)))
            # URIs that carry a secret are refused in GitOps mode (issue 14 item 9): the git
            # run's canaries are the git token and those of the credentials Secret
            _drive(cp, gitops_env, models[:2], run, agents[1])
            run.sinks["Kubernetes objects"] = "\n".join(dumps)
            images = {(a.get("result") or {}).get("data", {}).get("image")
                      for a in cp.admin.list_actions(kube_env)}
            run.sinks["image config and history"] = _image_configs(
                cluster, {i for i in images if i}, c["registry password"])
        for agent in agents:
            agent.stop()
        run.sinks["agent logs"] = "\n".join(agent.log() for agent in agents)
        run.sinks["control plane log"] = cp.log()
        run.sinks["events"] = json.dumps([cp.admin.events(e, limit=10_000)
                                          for e in (kube_env, gitops_env)])
        run.sinks["action results"] = json.dumps([[a["result"] for a in cp.admin.list_actions(e)]
                                                  for e in (kube_env, gitops_env)])
        run.sinks["git history"] = subprocess.run(
            ["git", "-C", str(work / "git/models.git"), "log", "--all", "-p", "--format=fuller"],
            capture_output=True, text=True, check=True).stdout
        for sink, text in run.sinks.items():  # kept for a look when a test fails
            (work / f"sink-{sink.replace(' ', '-')}.txt").write_text(text)
        yield run
    finally:
        for agent in agents:
            agent.stop()
        cp.close()
        git_server.close()
        token_server.close()


def test_the_run_used_every_credential(run: Run) -> None:
    """The canaries were really in use: otherwise finding none of them proves nothing."""
    assert run.failures == []
    assert len(set(run.canaries.values())) == len(run.canaries)
    assert all(len(value) >= 16 for value in run.canaries.values())
    assert "v2-gcs" in run.sinks["git history"]  # pushed with the git token
    assert "v4-signed" in run.sinks["Kubernetes objects"]  # taken while it was deployed
    assert run.sinks["image config and history"]  # pulled with the registry password


SINKS = ["agent logs", "control plane log", "events", "action results", "Kubernetes objects",
         "git history", "image config and history"]


@pytest.mark.parametrize("sink", SINKS)
def test_no_canary_in(run: Run, sink: str) -> None:
    text = run.sinks[sink]
    assert text.strip(), f"nothing collected from {sink}"
    assert find_canaries(text, run.canaries) == []

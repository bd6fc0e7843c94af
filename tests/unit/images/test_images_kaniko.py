"""Kaniko Job rendering per cloud (validated against the Kubernetes 1.33 schemas) and the runner.

The runner is exercised with an in-memory stand-in for KubeClient: no kubelet
runs Jobs on these machines, so a real executor pod cannot be observed.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from agent.errors import BuildError
from agent.images.kaniko import (
    ecr_config_map,
    render_build_job,
    run_build_job,
)
from agent.images.settings import ImageSettings

DEST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models:m-0123456789abcdef0123"
BASE = "registry.example.com/servers/mlserver:1.6"
LABELS = {"io.management-agent.model-id": "m1", "io.management-agent.deployment-id": "d1"}


def _render(images: dict[str, Any], destination: str = DEST, base: str = BASE) -> dict[str, Any]:
    job = render_build_job(
        destination=destination, base_image=base, model_uri="s3://bucket/models/iris/",
        model_path="/mnt/models", images=ImageSettings.model_validate(images),
        namespace="ml", labels=LABELS, fetcher_image="agent:1.0",
        artifact_env={"MGMT_AGENT_ARTIFACTS__S3_REGION": "eu-west-1"},
    )
    kubernetes_validate.validate(job, "1.33.0", strict=True)
    return job


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _kaniko(job: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(job)["containers"][0]
    return container


def _no_secret_build_args(job: dict[str, Any]) -> None:
    assert not any(a.startswith("--build-arg") for a in _kaniko(job)["args"])


def test_ecr_uses_creds_store_config_map_and_irsa_service_account() -> None:
    job = _render({"kaniko": {"config_map": "kaniko-ecr", "service_account": "image-builder"}})
    pod = _pod(job)
    assert pod["serviceAccountName"] == "image-builder"
    assert {"name": "docker-config", "configMap": {"name": "kaniko-ecr"}} in pod["volumes"]
    assert {"name": "docker-config", "mountPath": "/kaniko/.docker"} in _kaniko(job)["volumeMounts"]
    assert ecr_config_map("kaniko-ecr", "ml")["data"]["config.json"] == \
        '{"credsStore":"ecr-login"}'
    kubernetes_validate.validate(ecr_config_map("kaniko-ecr", "ml"), "1.33.0", strict=True)
    _no_secret_build_args(job)


@pytest.mark.parametrize("secret", ["acr-push", "openshift-builder-dockercfg", "generic-push"])
def test_dockerconfigjson_secret_is_mounted_as_config_json(secret: str) -> None:
    job = _render({"kaniko": {"secret_name": secret}},
                  destination="myacr.azurecr.io/models:m-0123456789abcdef0123")
    volume = next(v for v in _pod(job)["volumes"] if v["name"] == "docker-config")
    assert volume["secret"] == {"secretName": secret,
                                "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    mount = next(m for m in _kaniko(job)["volumeMounts"] if m["name"] == "docker-config")
    assert mount["mountPath"] == "/kaniko/.docker/config.json"
    assert mount["subPath"] == "config.json"


def test_gke_workload_identity_needs_only_the_service_account() -> None:
    job = _render({"kaniko": {"service_account": "builder-wi"}},
                  destination="europe-docker.pkg.dev/proj/models/img:m-0123456789abcdef0123")
    pod = _pod(job)
    assert pod["serviceAccountName"] == "builder-wi"
    assert [v["name"] for v in pod["volumes"]] == ["workspace"]


def test_insecure_and_skip_tls_registries_become_flags() -> None:
    job = _render({"insecure_registries": ["registry.local:5000"],
                   "skip_tls_verify_registries": ["selfsigned.local"]},
                  destination="registry.local:5000/models:m-0123456789abcdef0123",
                  base="selfsigned.local/base/python:3")
    args = _kaniko(job)["args"]
    for flag in ("--insecure-registry=registry.local:5000", "--insecure",
                 "--skip-tls-verify-registry=selfsigned.local", "--skip-tls-verify-pull"):
        assert flag in args
    assert "--insecure-pull" not in args and "--skip-tls-verify" not in args


def test_registry_ca_from_config_map() -> None:
    job = _render({"kaniko": {"registry_certificates": {"harbor.corp": "harbor-ca.crt"},
                              "registry_certificates_config_map": "registry-cas"}})
    assert "--registry-certificate=harbor.corp=/kaniko/certs/harbor-ca.crt" in _kaniko(job)["args"]
    assert {"name": "registry-certs", "configMap": {"name": "registry-cas"}} in _pod(job)["volumes"]


def test_job_shape_context_and_scheduling() -> None:
    job = _render({"kaniko": {
        "node_selector": {"pool": "builds"},
        "tolerations": [{"key": "builds", "operator": "Exists", "effect": "NoSchedule"}],
        "timeout_seconds": 900, "backoff_limit": 2, "ttl_seconds_after_finished": 3600,
        "extra_args": ["--compression=zstd"],
        "extra_volumes": [{"name": "cache", "emptyDir": {}}],
        "extra_volume_mounts": [{"name": "cache", "mountPath": "/cache"}],
        "model_credentials_secret": "s3-creds",
    }})
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"],
            spec["ttlSecondsAfterFinished"]) == (2, 900, 3600)
    template = spec["template"]
    assert template["metadata"]["annotations"][
        "cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    pod = template["spec"]
    assert pod["nodeSelector"] == {"pool": "builds"} and pod["tolerations"][0]["key"] == "builds"
    assert pod["restartPolicy"] == "Never"
    fetch = pod["initContainers"][0]
    assert fetch["image"] == "agent:1.0"
    assert fetch["args"][:3] == ["fetch-model", "s3://bucket/models/iris/", "/workspace/model"]
    assert "--credentials-dir" in fetch["args"]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env["DOCKERFILE"].splitlines()[:2] == [f"FROM {BASE}", "COPY model /mnt/models"]
    args = _kaniko(job)["args"]
    assert f"--destination={DEST}" in args and "--compression=zstd" in args
    assert "--context=dir:///workspace" in args
    assert job["metadata"]["name"] == "model-build-m-0123456789abcdef0123"


def test_config_map_and_secret_are_mutually_exclusive() -> None:
    with pytest.raises(ValidationError, match="mutually exclusive"):
        ImageSettings.model_validate({"kaniko": {"config_map": "a", "secret_name": "b"}})


class FakeKube:
    """Stand-in for KubeClient: a Job that reaches a scripted final state."""

    def __init__(self, final: dict[str, Any], pod_status: dict[str, Any], log: str = "") -> None:
        self.final = final
        self.pod_status = pod_status
        self.log = log
        self.created: list[dict[str, Any]] = []
        self.gets = 0

    def create(self, obj: Any, *, namespace: str | None = None,
               exist_ok: bool = False) -> dict[str, Any]:
        assert exist_ok
        self.created.append(obj)
        return dict(obj)

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None:
        self.gets += 1
        job = dict(self.created[-1])
        job["status"] = {} if self.gets < 2 else self.final
        return job

    def list(self, api_version: str, kind: str, namespace: str | None = None, *,
             label_selector: str | None = None,
             field_selector: str | None = None) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "model-build-x-abcde"}, "status": self.pod_status}]

    def pod_logs(self, name: str, namespace: str | None = None, *,
                 container: str | None = None, tail_lines: int | None = None) -> str:
        return self.log


def test_runner_returns_digest_from_termination_message() -> None:
    kube = FakeKube({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
                    {"containerStatuses": [{"name": "kaniko", "state": {"terminated": {
                        "exitCode": 0, "message": "sha256:" + "a" * 64}}}]})
    events: list[str] = []
    digest = run_build_job(kube, _render({}), lambda m, *a, **k: events.append(m),
                           sleep=lambda s: None)
    assert digest == "sha256:" + "a" * 64 and kube.gets == 2
    assert events[0].startswith("image build job model-build-")


def test_runner_failure_carries_reason_log_tail_and_hides_secrets() -> None:
    kube = FakeKube(
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded"}]},
        {"containerStatuses": [{"name": "kaniko", "state": {"terminated": {
            "exitCode": 137, "reason": "OOMKilled"}}}]},
        log="INFO pushing\npassword=hunter2-secret\nkilled\n",
    )
    with pytest.raises(BuildError) as caught:
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)
    text = str(caught.value)
    assert "OOMKilled" in text and "BackoffLimitExceeded" in text
    assert "resources.limits.memory" in text and "killed" in text
    assert "hunter2-secret" not in text


def test_runner_auth_failure_hint() -> None:
    kube = FakeKube(
        {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        {"containerStatuses": [{"name": "kaniko", "state": {"terminated": {"exitCode": 1,
                                                                           "reason": "Error"}}}]},
        log="error pushing image: UNAUTHORIZED: authentication required\n",
    )
    with pytest.raises(BuildError, match=r"could not authenticate to 123456789012\.dkr\.ecr"):
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)


def test_runner_deadline() -> None:
    kube = FakeKube({}, {})
    times = iter([0.0, 10.0, 1e9])
    with pytest.raises(BuildError, match="DeadlineExceeded"):
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None,
                      clock=lambda: next(times))

"""Kaniko Job rendering per cloud (validated against the Kubernetes 1.33 schemas) and the runner.

The runner is exercised with an in-memory stand-in for KubeClient: no kubelet
runs Jobs on these machines, so a real executor pod cannot be observed.
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.errors import BuildError, RegistryError
from agent.images import build_model_image
from agent.images.build_job import run_build_job
from agent.images.kaniko import ecr_config_map, job_name, render_build_job
from agent.images.settings import ImageSettings
from agent.model import DeploymentSpec, ModelRef
from tests.fixtures.fakekube import FakeKube

DEST = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/models:m-0123456789abcdef0123"
BASE = "registry.example.com/servers/mlserver:1.6"
LABELS = {"io.management-agent.model-id": "m1", "io.management-agent.deployment-id": "d1"}


def _render(images: dict[str, Any], destination: str = DEST, base: str = BASE,
            model_credentials_secret: str | None = None) -> dict[str, Any]:
    job = render_build_job(
        destination=destination, base_image=base, model_uri="s3://bucket/models/iris/",
        model_path="/mnt/models", images=ImageSettings.model_validate(images),
        namespace="ml", labels=LABELS, fetcher_image="agent:1.0",
        artifact_env={"MGMT_AGENT_ARTIFACTS__S3_REGION": "eu-west-1"},
        model_credentials_secret=model_credentials_secret, deployment_id="d1", model_id="m1",
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
    assert [v["name"] for v in pod["volumes"]] == ["workspace", "fetch-tmp"]
    # the cloud SDK exchanges the service account's token for the builder identity
    assert pod["automountServiceAccountToken"] is True


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
    assert fetch["args"][:4] == ["fetch-model", "--uri-from-env", "MODEL_URI", "/workspace/model"]
    assert "--credentials-dir" in fetch["args"]
    assert "s3://bucket/models/iris/" not in str(job), "the URI is in the build's Secret"
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["DOCKERFILE"].splitlines()[:2] == [f"FROM {BASE}", "COPY model /mnt/models"]
    args = _kaniko(job)["args"]
    assert f"--destination={DEST}" in args and "--compression=zstd" in args
    assert "--context=dir:///workspace" in args
    assert job["metadata"]["name"] == job_name(DEST)
    assert job["metadata"]["name"].startswith("model-build-m-0123456789abcdef0123-")


def test_job_name_depends_on_repository_and_tag() -> None:
    """Same tag, two repositories: two Jobs (one must not adopt the other's build)."""
    other = DEST.replace("/models:", "/other-models:")
    assert job_name(DEST) != job_name(other)
    assert job_name(DEST) == job_name(DEST)
    assert job_name(DEST) != job_name(DEST.replace(":m-0", ":m-1"))
    assert _render({})["metadata"]["name"] != _render({}, destination=other)["metadata"]["name"]
    for destination in (DEST, other, "r.io/a/b:" + "X_y." * 32, "r.io/a/b", "r.io/a/b:___"):
        name = job_name(destination)
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name


def _model_credentials(job: dict[str, Any]) -> str | None:
    volume = next((v for v in _pod(job)["volumes"] if v["name"] == "model-credentials"), None)
    return None if volume is None else str(volume["secret"]["secretName"])


def test_deployment_model_credentials_secret_wins_over_the_setting() -> None:
    kaniko = {"kaniko": {"model_credentials_secret": "default-creds"}}
    assert _model_credentials(_render(kaniko)) == "default-creds"
    assert _model_credentials(_render(kaniko, model_credentials_secret="dep-creds")) == \
        "dep-creds"
    job = _render({}, model_credentials_secret="dep-creds")
    assert _model_credentials(job) == "dep-creds"
    assert "--credentials-dir" in _pod(job)["initContainers"][0]["args"]
    assert _model_credentials(_render({})) is None


def test_config_map_and_secret_are_mutually_exclusive() -> None:
    with pytest.raises(ValidationError, match="mutually exclusive"):
        ImageSettings.model_validate({"kaniko": {"config_map": "a", "secret_name": "b"}})


def job_kube(final: dict[str, Any], pod_status: dict[str, Any], log: str = "") -> FakeKube:
    """A Job that reaches `final` on its second GET; its pod has `pod_status`."""
    return FakeKube(on_get=lambda job, gets: job.update(status=final if gets >= 2 else {}),
                    pods=[{"metadata": {"name": "model-build-x-abcde"}, "status": pod_status}],
                    logs=log)


def test_runner_returns_digest_from_termination_message() -> None:
    kube = job_kube({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
                    {"containerStatuses": [{"name": "kaniko", "state": {"terminated": {
                        "exitCode": 0, "message": "sha256:" + "a" * 64}}}]})
    events: list[str] = []
    digest = run_build_job(kube, _render({}), lambda m, *a, **k: events.append(m),
                           sleep=lambda s: None)
    assert digest == "sha256:" + "a" * 64 and kube.gets == 2
    assert events[0].startswith("image build job model-build-")


def test_runner_failure_carries_reason_log_tail_and_hides_secrets() -> None:
    kube = job_kube(
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
    kube = job_kube(
        {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
        {"containerStatuses": [{"name": "kaniko", "state": {"terminated": {"exitCode": 1,
                                                                           "reason": "Error"}}}]},
        log="error pushing image: UNAUTHORIZED: authentication required\n",
    )
    with pytest.raises(BuildError, match=r"could not authenticate to 123456789012\.dkr\.ecr"):
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)


def test_runner_deadline() -> None:
    kube = job_kube({}, {})
    times = iter([0.0, 10.0, 1e9])
    with pytest.raises(BuildError, match="DeadlineExceeded"):
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None,
                      clock=lambda: next(times))


#: The pod of a finished build: Kaniko's termination message is the image digest.
BUILT_POD = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
    {"name": "kaniko", "state": {"terminated": {"exitCode": 0,
                                                "message": "sha256:" + "b" * 64}}}]}}


def _complete_if_ours(job: dict[str, Any], gets: int) -> None:
    """A Job for our destination completes; one for another destination stays as it is."""
    if "--destination=" + DEST in str(job) and not job["status"]:
        job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


def existing_job_kube(existing: dict[str, Any], gone_after: int = 1) -> FakeKube:
    """A namespace that already holds a Job of the same name (adopted by `create(exist_ok)`)."""
    return FakeKube([existing], on_get=_complete_if_ours, gone_after=gone_after,
                    pods=[BUILT_POD], logs="old log: UNAUTHORIZED")


FAILED = {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                       "reason": "BackoffLimitExceeded"}]}


def test_a_failed_job_is_deleted_and_built_again() -> None:
    kube = existing_job_kube({**_render({}), "status": FAILED}, gone_after=2)
    events: list[str] = []
    digest = run_build_job(kube, _render({}), lambda m, *a, **k: events.append(m),
                           sleep=lambda s: None)
    assert kube.calls == ["create", "delete", "create"]
    assert [(kind, how) for kind, _, how in kube.deleted] == [("Job", "Background")]
    assert digest == "sha256:" + "b" * 64
    assert any("failed before" in e for e in events)


def test_a_job_for_another_destination_is_replaced() -> None:
    other = _render({}, destination=DEST.replace("/models:", "/elsewhere:"))
    other["metadata"]["name"] = _render({})["metadata"]["name"]
    kube = existing_job_kube({**other, "status": {}})
    assert run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)
    assert kube.calls == ["create", "delete", "create"]


def test_a_running_job_is_adopted_not_replaced() -> None:
    kube = existing_job_kube({**_render({}), "status": {"active": 1}})
    kube.job["status"] = {}  # type: ignore[index]
    run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)
    assert kube.calls == ["create"]


def test_replacing_a_failed_job_is_bounded() -> None:
    kube = existing_job_kube({**_render({}), "status": FAILED}, gone_after=10**6)
    times = iter(float(t) for t in range(0, 10**6, 5))
    with pytest.raises(BuildError, match="still there after 60s"):
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None,
                      clock=lambda: next(times))
    assert kube.calls == ["create", "delete"]


# -- pre-build registry checks -------------------------------------------------------------

TARGET = "registry.example.com/models/iris"
OTHER_BASE = "base.example.org/servers/mlserver:1.6"


class _Source:
    digest = "sha256:" + "c" * 64


class _Registry:
    """Stands in for agent.images.registry.Registry; `fail` names the call that raises."""

    fail = ""

    def __init__(self, host: str, images: Any, provider: Any) -> None:
        self.host = host
        self.provider = self

    def _maybe_fail(self, call: str) -> None:
        if call == self.fail:
            raise RegistryError(f"registry {self.host} answered 401 ({call})")

    def ping(self) -> None:
        self._maybe_fail("ping")

    def resolve_image(self, repository: str, reference: str) -> Any:
        self._maybe_fail("resolve_image")
        return type("M", (), {"digest": "sha256:" + "d" * 64})()

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        self._maybe_fail("manifest_digest")
        return None

    def ensure_repository(self, registry: str, repository: str) -> None:
        self._maybe_fail("ensure_repository")


@pytest.mark.parametrize("fail", ["ping", "resolve_image", "manifest_digest",
                                  "ensure_repository"])
def test_no_registry_identity_warns_and_builds_with_kaniko(
        fail: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The registry is a stand-in: a registry that refuses the agent's own identity while the
    builder's works cannot be set up with the harness's registries (one identity each)."""
    import agent.images.content

    monkeypatch.setattr(_Registry, "fail", fail)
    monkeypatch.setattr(agent.images.content, "Registry", _Registry)
    settings = Settings.model_validate({"images": {
        "builder": "kaniko", "generated_image_repository": TARGET,
        "kaniko": {"namespace": "ml"}}})
    spec = DeploymentSpec(id="d1", model=ModelRef(id="m1", uri="s3://bucket/iris/",
                                                  credentials_secret="iris-creds"))
    kube = FakeKube(on_get=lambda job, gets: job.update(status={"succeeded": 1}),
                    pods=[BUILT_POD])  # an empty namespace; the created Job completes at once
    with caplog.at_level(logging.WARNING, logger="agent.images.content"):
        image = build_model_image(spec, OTHER_BASE, "/mnt/models", settings,
                                  lambda *a, **k: None, kube=kube, source=nullcontext(_Source()))
    assert not image.reused and image.digest == "sha256:" + "b" * 64
    # the build's Secret (model URI) before the Job, then owned by it
    assert kube.calls == ["apply", "create", "apply"] and kube.job is not None
    assert _model_credentials(kube.job) == "iris-creds"
    secret = kube.objects[("Secret", kube.job["metadata"]["name"] + "-model")]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == kube.job["metadata"]["uid"]
    host = "base.example.org" if fail == "resolve_image" else "registry.example.com"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(host in w and "builder's identity" in w for w in warnings), warnings


# -- pod security, secrets out of the Job ----------------------------------------------------

PSA_MESSAGE = ('Error creating: pods "model-build-x-abcde" is forbidden: violates PodSecurity '
               '"restricted:latest": runAsNonRoot != true (container "kaniko" must not set '
               'securityContext.runAsUser=0)')


def test_a_pod_refused_by_pod_security_fails_the_build_at_once_and_says_what_to_do() -> None:
    """The Job controller's FailedCreate event, as the real one records it (the stand-in's
    Job controller is checked to record the same in tests/integration/images)."""
    kube = FakeKube(on_get=lambda job, gets: None, events=[{
        "reason": "FailedCreate", "type": "Warning", "message": PSA_MESSAGE,
        "involvedObject": {"kind": "Job", "name": job_name(DEST)}}])
    times = iter(float(t) for t in range(1000))
    with pytest.raises(BuildError) as caught:
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None,
                      clock=lambda: next(times))
    text = str(caught.value)
    assert 'violates PodSecurity "restricted:latest"' in text
    assert "images.builder: direct" in text and "must run as root" in text
    assert kube.calls == ["create", "delete"], "the refused Job is not left to its deadline"


def test_other_failed_creates_are_left_to_the_job_controller_to_retry() -> None:
    """A scripted Job (FakeKube: a quota refusal cannot be produced on demand by the stand-in);
    only Pod Security refusals end the build early."""
    kube = job_kube({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
                    {"containerStatuses": []})
    kube.events = [{"reason": "FailedCreate", "message": 'pods "x" is forbidden: exceeded '
                    'quota: builds', "involvedObject": {"kind": "Job", "name": job_name(DEST)}}]
    assert run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None) == ""


SIGNED = ("https://user:pa55word-xyz@store.example.com/m.tgz?X-Amz-Signature=deadbeefcafe"
          "&X-Goog-Signature=feedface01&sig=c2FzLXNpZw%3D%3D")


def test_failure_log_tail_carries_no_user_info_or_signed_query() -> None:
    """A scripted failed Job and its log (FakeKube: the redaction is the unit under test; the
    stand-in run is tests/integration/images/test_images_kaniko_job.py)."""
    kube = job_kube(
        {"failed": 1, "conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded"}]},
        {"initContainerStatuses": [{"name": "fetch-model", "state": {"terminated": {
            "exitCode": 1, "reason": "Error"}}}]},
        log=f"management-agent fetch-model: error: GET {SIGNED} answered 403\n")
    with pytest.raises(BuildError) as caught:
        run_build_job(kube, _render({}), lambda *a, **k: None, sleep=lambda s: None)
    text = str(caught.value)
    assert "https://store.example.com/m.tgz?X-Amz-Signature=<redacted>" in text
    for secret in ("pa55word-xyz", "deadbeefcafe", "feedface01", "c2FzLXNpZw"):
        assert secret not in text


def test_kaniko_pod_is_hardened_where_it_can_be() -> None:
    pod = _pod(_render({}))
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["automountServiceAccountToken"] is False, "no builder identity: no token"
    fetch = pod["initContainers"][0]["securityContext"]
    assert fetch == {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                     "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}
    assert _kaniko(_render({}))["securityContext"] == {"runAsUser": 0,
                                                      "allowPrivilegeEscalation": False}

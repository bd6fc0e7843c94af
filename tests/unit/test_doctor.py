"""`management-agent doctor`: formatting, exit codes, the permission list, check plumbing.

The Kubernetes API and the control plane are replaced by small fakes here (unit
tests, no network); the registry check runs against the harness registry when
the harness is up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent import doctor
from agent.cli import build_parser
from agent.config import Settings, load_settings
from agent.doctor import (
    REQUIRED_PERMISSIONS,
    CheckResult,
    Context,
    exit_code,
    format_table,
    required_permissions,
    run_checks,
)
from agent.errors import ControlPlaneError
from tests.fixtures.fakekube import FakeKube
from tests.fixtures.harness import harness_down, harness_vars, require


def _settings(*overrides: str) -> Settings:
    return load_settings(None, environ={}, overrides=["plugin.name=kubernetes", *overrides])


def _grants(settings: Settings) -> set[tuple[str, str]]:
    return {(p.api_group, p.resource) for p in required_permissions(settings)}


def test_table_lists_every_check_and_a_fix_for_failures() -> None:
    results = [
        CheckResult("control-plane", "OK", "answered"),
        CheckResult("registry-push", "FAIL", "401 from registry", "check imageBuilder.secretName"),
        CheckResult("artifact-store", "SKIP", "no --model-uri given"),
    ]
    text = format_table(results)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert any(line.startswith("registry-push   FAIL    401") for line in lines)
    assert "fix: check imageBuilder.secretName" in text
    assert text.endswith("1 check(s) failed")
    assert format_table(results[:1]).endswith("all checks passed")


def test_exit_code_is_non_zero_only_on_failure() -> None:
    assert exit_code([CheckResult("a", "OK", ""), CheckResult("b", "SKIP", "")]) == 0
    assert exit_code([CheckResult("a", "OK", ""), CheckResult("b", "FAIL", "")]) == 1


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    args = build_parser().parse_args(["doctor", *argv])
    code = doctor.main(args)
    return code, capsys.readouterr().out


def test_invalid_settings_exit_2_with_the_config_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MGMT_AGENT_CONFIG", raising=False)
    code, out = _run(["--set", "runtime.workers=0", "--json"], capsys)
    assert code == 2
    data = json.loads(out)
    assert data["ok"] is False
    assert data["checks"][0]["name"] == "config"
    assert "runtime.workers" in data["checks"][0]["detail"]


def test_json_output_and_skips(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MGMT_AGENT_CONFIG", raising=False)
    skips = [arg for name in doctor.CHECKS for arg in ("--skip", name)]
    code, out = _run([*skips, "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == ["config", *doctor.CHECKS]
    assert {c["status"] for c in data["checks"][1:]} == {"SKIP"}
    assert set(data["checks"][0]) == {"name", "status", "detail", "fix"}


def test_a_crashing_check_is_a_failure_of_that_check_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(ctx: Context) -> CheckResult:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(doctor, "CHECKS", {
        "boom": (boom, lambda c, e: "read the log"),
        "fine": (lambda c: CheckResult("fine", "OK", "good"), lambda c, e: ""),
    })
    results = run_checks(Context(_settings()))
    assert [(r.name, r.status) for r in results] == [("boom", "FAIL"), ("fine", "OK")]
    assert results[0].detail == "RuntimeError: unexpected"
    assert results[0].fix == "read the log"


def test_permissions_follow_ingress_mode_builder_and_leader_election() -> None:
    default = _grants(_settings())
    assert ("networking.k8s.io", "ingresses") in default
    assert ("batch", "jobs") not in default
    assert ("coordination.k8s.io", "leases") not in default
    kaniko = _grants(_settings("images.builder=kaniko"))
    assert ("batch", "jobs") in kaniko
    route = _grants(_settings("plugin.kubernetes.ingress_mode=openshift-route"))
    assert ("route.openshift.io", "routes") in route
    assert ("networking.k8s.io", "ingresses") in route  # old Ingresses are still pruned
    assert ("coordination.k8s.io", "leases") in _grants(
        _settings("runtime.leader_election.enabled=true"))


def test_permission_list_has_one_entry_per_resource_and_a_reason() -> None:
    keys = [(p.api_group, p.resource) for p in REQUIRED_PERMISSIONS]
    assert len(keys) == len(set(keys))
    assert all(p.why and p.verbs and p.when in doctor.CONDITIONS for p in REQUIRED_PERMISSIONS)


def test_permission_check_names_each_missing_verb() -> None:
    ctx = Context(_settings("plugin.kubernetes.namespace=models"))
    fake = FakeKube(denied={("delete", "deployments"), ("get", "pods/log")})
    ctx._kube = fake  # type: ignore[assignment]
    result = doctor.check_permissions(ctx)
    assert result.status == "FAIL"
    assert "2 of" in result.detail
    assert "delete deployments (apps)" in result.detail
    assert "get pods/log (core)" in result.detail
    assert "rbac.create" in result.fix
    assert all(r["namespace"] == "models" for r in fake.reviews)
    assert {"resource": "pods", "subresource": "log"}.items() <= next(
        r for r in fake.reviews if r.get("subresource")).items()

    ctx._kube = FakeKube()  # type: ignore[assignment]
    assert doctor.check_permissions(ctx).status == "OK"


class FakeControlPlane:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.closed = False

    def known_deployment_ids(self) -> set[str] | None:
        if self.error:
            raise self.error
        return {"d1", "d2"}

    def pending(self, wait_seconds: float = 0.0) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (None, None),
        (ControlPlaneError("HTTP 401: unauthorized"), "controlPlane.apiTokenSecret"),
        (ControlPlaneError("cannot connect (ConnectionError)"), "controlPlane.url"),
        (ControlPlaneError("SSL: CERTIFICATE_VERIFY_FAILED"), "controlPlane.caBundle"),
    ],
)
def test_control_plane_check_explains_the_fix(
    error: Exception | None, hint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeControlPlane(error)
    monkeypatch.setattr("agent.controlplane.open_control_plane", lambda settings: fake)
    [result] = [r for r in run_checks(Context(_settings()), skip=[
        n for n in doctor.CHECKS if n != "control-plane"]) if r.name == "control-plane"]
    assert fake.closed
    if hint is None:
        assert result.status == "OK"
        assert "deployments: 2" in result.detail
    else:
        assert result.status == "FAIL"
        assert hint in result.fix


def test_checks_that_do_not_apply_are_skipped() -> None:
    ctx = Context(_settings("images.builder=none", "plugin.kubernetes.ingress_mode=none"))
    results = {r.name: r for r in run_checks(ctx, skip=["control-plane", "permissions",
                                                         "base-image"])}
    assert results["ingress-class"].status == "SKIP"
    assert results["registry-push"].status == "SKIP"
    assert results["ecr-repository"].status == "SKIP"
    assert results["artifact-store"].detail == "no --model-uri given"


@pytest.mark.integration
def test_registry_push_check_against_the_harness_registry() -> None:
    host = os.environ.get("HARNESS_REGISTRY") or harness_vars().get("HARNESS_REGISTRY")
    if not host:
        harness_down("harness registry not running")
    ok = run_checks(Context(_settings(f"images.generated_image_repository={host}/doctor-test",
                                      f"images.insecure_registries=[{host}]")),
                    skip=[n for n in doctor.CHECKS if n != "registry-push"])
    result = next(r for r in ok if r.name == "registry-push")
    assert result.status == "OK", result
    bad = run_checks(Context(_settings("images.generated_image_repository=127.0.0.1:9/x",
                                       "images.insecure_registries=[127.0.0.1:9]",
                                       "images.retries=0")),
                     skip=[n for n in doctor.CHECKS if n != "registry-push"])
    failed = next(r for r in bad if r.name == "registry-push")
    assert failed.status == "FAIL"
    assert "imageBuilder.generatedImageRepository" in failed.fix


@pytest.mark.integration
def test_ecr_check_creates_a_missing_repository_on_the_moto_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """moto (harness) speaks the ECR API; the repository is absent, then created."""
    env = require(harness_vars(), "HARNESS_MOTO_ENDPOINT", "HARNESS_ECR_REGISTRY")
    moto, registry = env["HARNESS_MOTO_ENDPOINT"], env["HARNESS_ECR_REGISTRY"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    repo = f"doctor-{os.getpid()}"
    base = [f"images.generated_image_repository={registry}/{repo}",
            f"images.credentials.ecr_registry_override={registry}",
            f"images.credentials.ecr_endpoint_url={moto}",
            "images.credentials.aws_region=us-east-1"]
    missing = doctor.check_ecr_repository(Context(_settings(*base)))
    assert missing.status == "FAIL"
    assert "createRepositories" in missing.fix
    created = doctor.check_ecr_repository(Context(_settings(
        *base, "images.credentials.ecr_create_repositories=true")))
    assert created.status == "OK" and "created" in created.detail
    again = doctor.check_ecr_repository(Context(_settings(*base)))
    assert again.status == "OK" and "exists" in again.detail


@pytest.mark.parametrize("mode", ["nginx", "prefix", "openshift-route", "gateway", "none"])
def test_every_kind_the_plugin_manages_is_in_the_permission_list(mode: str) -> None:
    """Ties REQUIRED_PERMISSIONS to the plugin's own list of kinds (apply, prune, stop)."""
    from agent.plugins.kubernetes.apply import managed_kinds, removable_kinds
    from agent.plugins.kubernetes.client import KubeClient

    refs = ["plugin.kubernetes.gateway_parent_refs=[{name: gw}]"] if mode == "gateway" else []
    settings = _settings(f"plugin.kubernetes.ingress_mode={mode}", *refs)
    granted = {(p.api_group, p.resource): set(p.verbs) for p in required_permissions(settings)}
    for api_version, kind in managed_kinds(settings.plugin.kubernetes):
        group = api_version.rpartition("/")[0]
        plural, _ = KubeClient.resource(kind)
        assert {"get", "list", "patch", "delete"} <= granted.get((group, plural), set()), kind
    for api_version, kind in removable_kinds():  # stop and prune: routes of any mode
        group = api_version.rpartition("/")[0]
        plural, _ = KubeClient.resource(kind)
        assert {"list", "delete"} <= granted.get((group, plural), set()), kind


def test_artifact_store_check_opens_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pkl").write_bytes(b"weights")
    (model / "MLmodel").write_text("flavors: {}\n")
    settings = _settings(f"artifacts.file_roots=[{tmp_path}]")  # file:// is refused elsewhere
    ok = doctor.check_artifact_store(Context(settings, model_uri=model.as_uri()))
    assert ok.status == "OK"
    assert "2 file(s)" in ok.detail and "sha256:" in ok.detail
    [failed] = [r for r in run_checks(Context(settings, model_uri=(tmp_path / "nope").as_uri()),
                                      skip=[n for n in doctor.CHECKS if n != "artifact-store"])
                if r.name == "artifact-store"]
    assert failed.status == "FAIL"
    assert "artifacts.defaultCredentialsSecret" in failed.fix


@pytest.mark.integration
def test_base_image_check_against_the_harness_registry() -> None:
    env = require(harness_vars(), "HARNESS_BASE_IMAGE", "HARNESS_REGISTRY")
    image, registry = env["HARNESS_BASE_IMAGE"], env["HARNESS_REGISTRY"]

    def check(ref: str) -> CheckResult:
        return doctor.check_base_image(Context(_settings(
            f"plugin.kubernetes.server_profiles={{local: {{image: '{ref}'}}}}",
            "plugin.kubernetes.default_server_profile=local",
            f"images.insecure_registries=[{registry}]", "images.retries=0")))

    ok = check(image)
    assert ok.status == "OK" and "sha256:" in ok.detail
    missing = check(f"{registry}/base/python:no-such-tag")
    assert missing.status == "FAIL" and "not found" in missing.detail

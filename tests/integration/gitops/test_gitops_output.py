"""GitOps output of the filesystem plugin against real git repositories.

The remote is a local bare repository; "someone else" is a second clone that
pushes in between, which is exactly what a rejected (non-fast-forward) push
looks like to the agent.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import Settings, load_settings
from agent.errors import InvalidActionError, PluginError
from agent.model import DeploymentSpec
from agent.plugins.filesystem import FilesystemPlugin

pytestmark = pytest.mark.integration


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True, env=env).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    return bare


def settings(tmp_path: Path, remote: Path, **extra: Any) -> Settings:
    values = {"plugin.filesystem.output_dir": str(tmp_path / "work"),
              "plugin.filesystem.git.enabled": "true",
              "plugin.filesystem.git.remote": str(remote),
              "plugin.kubernetes.model_delivery": "storage-initializer",
              "plugin.kubernetes.agent_image": "registry.local/agent:1",
              "images.builder": "none", **extra}
    return load_settings(environ={}, overrides=[f"{k}={v}" for k, v in values.items()])


def spec(model: str = "m1", deployment: str = "d1") -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {"id": deployment, "model": {"id": model, "uri": f"s3://models/{model}"}})


def events() -> Any:
    seen: list[str] = []

    def report(message: str, level: str = "info", **details: Any) -> None:
        seen.append(message)

    report.seen = seen  # type: ignore[attr-defined]
    return report


def other_clone(tmp_path: Path, remote: Path) -> Path:
    clone = tmp_path / "colleague"
    subprocess.run(["git", "clone", "-q", str(remote), str(clone)], check=True)
    return clone


def test_each_action_is_one_pushed_commit_with_the_rendered_manifests(tmp_path: Path,
                                                                      remote: Path) -> None:
    plugin = FilesystemPlugin(settings(tmp_path, remote))
    result = plugin.start(spec(), events())
    assert result.data.details["commit"] == git(remote, "rev-parse", "main")
    assert "committed" in (result.data.message or "")
    plugin.replace_model(spec("m2"), events())
    plugin.start(spec("m2"), events())  # repeated: no change, no commit
    plugin.stop("d1", events())
    log = git(remote, "log", "--format=%s", "main").splitlines()
    assert log == ["stop d1", "replace model d1: model m2", "start d1: model m1"]
    files = git(remote, "ls-tree", "-r", "--name-only", "main~1").splitlines()
    assert "d1/manifests.yaml" in files and "kustomization.yaml" in files
    rendered = list(yaml.safe_load_all(git(remote, "show", "main~1:d1/manifests.yaml")))
    deployment = next(o for o in rendered if o["kind"] == "Deployment")
    assert deployment["metadata"]["labels"]["management-agent.io/model-id"] == "m2"
    kustomization = yaml.safe_load(git(remote, "show", "main~1:kustomization.yaml"))
    assert kustomization["resources"] == ["d1/manifests.yaml"]


def test_rejected_push_is_rebased_never_forced(tmp_path: Path, remote: Path) -> None:
    plugin = FilesystemPlugin(settings(tmp_path, remote))
    plugin.start(spec(deployment="d1"), events())
    colleague = other_clone(tmp_path, remote)
    (colleague / "README.md").write_text("hand-written note\n")
    git(colleague, "add", "README.md")
    git(colleague, "commit", "-q", "-m", "colleague's note")
    git(colleague, "push", "-q", "origin", "main")
    theirs = git(colleague, "rev-parse", "HEAD")

    plugin.start(spec(deployment="d2"), events())
    assert git(remote, "log", "-1", "--format=%s", "main") == "start d2: model m1"
    assert git(remote, "merge-base", "--is-ancestor", theirs, "main") == ""  # not forced away
    assert "README.md" in git(remote, "ls-tree", "--name-only", "main").splitlines()


def test_conflicting_remote_change_is_taken_over_and_re_rendered(tmp_path: Path,
                                                                 remote: Path) -> None:
    plugin = FilesystemPlugin(settings(tmp_path, remote))
    plugin.start(spec(), events())
    colleague = other_clone(tmp_path, remote)
    (colleague / "d1" / "manifests.yaml").write_text("# edited by hand\n")
    git(colleague, "commit", "-qam", "hand edit")
    git(colleague, "push", "-q", "origin", "main")
    theirs = git(colleague, "rev-parse", "HEAD")

    plugin.replace_model(spec("m2"), events())
    assert git(remote, "merge-base", "--is-ancestor", theirs, "main") == ""
    content = git(remote, "show", "main:d1/manifests.yaml")
    assert "edited by hand" not in content and "m2" in content


def test_clone_of_an_existing_remote_and_token_never_in_errors(tmp_path: Path,
                                                               remote: Path) -> None:
    FilesystemPlugin(settings(tmp_path, remote)).start(spec(), events())
    second = FilesystemPlugin(settings(tmp_path / "second", remote))
    assert second.status("d1").model_id == "m1", "a new working copy starts from the remote"

    token = "ghp_supersecrettokenvalue"
    broken = settings(tmp_path / "third", tmp_path / "does-not-exist.git",
                      **{"plugin.filesystem.git.token": token})
    with pytest.raises(PluginError) as caught:
        FilesystemPlugin(broken).start(spec(), events())
    assert token not in str(caught.value)
    assert "does-not-exist.git" in str(caught.value)


@pytest.mark.parametrize("bad_id", ["../outside", "/", ".git"])
def test_ids_outside_the_output_dir_are_refused(tmp_path: Path, remote: Path,
                                                bad_id: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    plugin = FilesystemPlugin(settings(tmp_path, remote))
    with pytest.raises(InvalidActionError):
        plugin.stop(bad_id, events())
    assert outside.exists() and (tmp_path / "work" / ".git").exists()


def test_credentials_written_into_the_remote_url_never_reach_errors(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the fetch fails at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = f"http://agent:url-embedded-secret@127.0.0.1:{port}/models.git"
    with pytest.raises(PluginError) as caught:
        FilesystemPlugin(settings(tmp_path, remote))  # type: ignore[arg-type]
    assert "url-embedded-secret" not in str(caught.value)
    assert f"127.0.0.1:{port}/models.git" in str(caught.value)


def test_status_reads_the_live_cluster_once_gitops_applied_it(tmp_path: Path, remote: Path,
                                                               kube_api: Any) -> None:
    """The stand-in plays the cluster; `kubectl apply -k` of the committed tree plays Argo CD,
    and a status-subresource write plays the Deployment controller (no pods are needed)."""
    from agent.model import DeploymentState
    from tests.fixtures.kube import find_binary

    config = settings(tmp_path, remote, **{
        "plugin.filesystem.read_live_state": "true",
        "plugin.kubernetes.kubeconfig": str(kube_api.kubeconfig),
        "plugin.kubernetes.namespace": "default",
        "plugin.kubernetes.ingress_mode": "none"})
    plugin = FilesystemPlugin(config)
    plugin.start(spec(), events())
    pending = plugin.status("d1")
    assert pending.state == DeploymentState.LAUNCHING
    assert "not yet applied" in (pending.message or "")

    kubectl = find_binary("kubectl")
    assert kubectl, "kubectl comes with the harness (tools/harness up)"
    subprocess.run([kubectl, "--kubeconfig", str(kube_api.kubeconfig), "apply", "-k",
                    str(tmp_path / "work")], check=True, capture_output=True)
    from agent.plugins.kubernetes.client import KubeClient

    client = KubeClient(config.plugin.kubernetes)
    name = next(o["metadata"]["name"] for o in client.list("apps/v1", "Deployment"))
    deployment = client.get("apps/v1", "Deployment", name)
    client.request(
        "PATCH", client.path("apps/v1", "Deployment", name, subresource="status"),
        body={"status": {"observedGeneration": deployment["metadata"]["generation"],
                         "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                         "availableReplicas": 1}},
        content_type="application/merge-patch+json")
    live = plugin.status("d1")
    assert live.state == DeploymentState.READY and live.model_id == "m1"
    plugin.close()


def _committed_text(remote: Path) -> str:
    """Every file of every commit on the remote, as git hands it to Argo CD / Flux."""
    return subprocess.run(["git", "-C", str(remote), "log", "-p", "--all", "--format=%B"],
                          check=True, capture_output=True, text=True).stdout


def test_no_env_value_or_credential_reaches_git(tmp_path: Path, remote: Path) -> None:
    """Env values stay out of annotations (the spec is a hash; the server's env has them, as
    the deployment asked); a plain URI goes to the deployment's Secret and state.json; a
    URI carrying credentials is refused before anything is written."""
    plugin = FilesystemPlugin(settings(tmp_path, remote))
    plain = DeploymentSpec.model_validate(
        {"id": "d1", "model": {"id": "m1", "uri": "s3://models/m1"},
         "env": {"API_KEY": "env-canary-4711"}})
    plugin.start(plain, events())
    committed = _committed_text(remote)
    assert committed.count("env-canary-4711") == 1  # the server container's env only
    manifests = list(yaml.safe_load_all((tmp_path / "work" / "d1" / "manifests.yaml").open()))
    assert all("env-canary" not in str(o["metadata"].get("annotations")) for o in manifests)
    assert "management-agent.io/spec: sha256:" in committed
    assert "kind: Secret" in committed  # the storage initializer's URI (a plain location)

    for uri in ("https://user:pa55-canary@store.example.com/m.tgz",
                "https://store.example.com/m.tgz?X-Amz-Signature=sig-canary-0815"):
        signed = DeploymentSpec.model_validate({"id": "d2", "model": {"id": "m2", "uri": uri}})
        with pytest.raises(InvalidActionError, match="carries credentials"):
            plugin.start(signed, events())
    committed = _committed_text(remote)
    assert "pa55-canary" not in committed and "sig-canary-0815" not in committed
    assert not (tmp_path / "work" / "d2").exists()


def test_image_mode_state_keeps_the_model_uri_redacted(tmp_path: Path, remote: Path) -> None:
    from agent.plugins.filesystem import STATE_FILE

    plugin = FilesystemPlugin(settings(tmp_path, remote, **{
        "plugin.kubernetes.model_delivery": "image"}))
    signed = DeploymentSpec.model_validate({"id": "d3", "model": {
        "id": "m3", "image": "registry.local/m3:1",
        "uri": "https://store.example.com/m.tgz?X-Goog-Signature=sig-canary-1234"}})
    plugin.start(signed, events())
    state = (tmp_path / "work" / "d3" / STATE_FILE).read_text()
    assert "https://store.example.com/m.tgz?X-Goog-Signature=<redacted>" in state
    assert "sig-canary-1234" not in _committed_text(remote)


def test_credentials_secret_name_policy_applies_to_gitops_output(tmp_path: Path,
                                                                  remote: Path) -> None:
    from agent.errors import ArtifactError

    plugin = FilesystemPlugin(settings(tmp_path, remote, **{
        "artifacts.credentials_secret_prefix": "model-creds-"}))
    named = DeploymentSpec.model_validate({"id": "d4", "model": {
        "id": "m4", "uri": "s3://models/m4", "credentials_secret": "management-agent-token"}})
    with pytest.raises(ArtifactError, match="must start with 'model-creds-'"):
        plugin.start(named, events())
    allowed = named.model_copy(update={"model": named.model.model_copy(
        update={"credentials_secret": "model-creds-s3"})})
    assert plugin.start(allowed, events()).data.details["commit"]

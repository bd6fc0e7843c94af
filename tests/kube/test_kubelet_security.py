"""The stand-in kubelet's security decisions and $(VAR) expansion, without running podman.

What these flags do to real processes is checked on the harness cluster in
test_controllers_security.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tools.kube.controllers import kubelet_security as ks
from tools.kube.controllers.podspec import expand


def unused_image_user() -> str:
    raise AssertionError("Must not be called: runAsUser is set or no user is needed")


def pod(pod_sc: dict[str, Any] | None = None, **container_sc: Any) -> tuple[dict, dict]:
    container = {"name": "server", "image": "img:1", "securityContext": container_sc}
    p = {"metadata": {"name": "web", "namespace": "team", "uid": "u-1"},
         "spec": {"securityContext": pod_sc or {}, "containers": [container]}}
    return p, container


@pytest.mark.parametrize(("image_user", "pod_sc", "container_sc", "error"), [
    ("", {"runAsNonRoot": True}, {},
     'container has runAsNonRoot and image will run as root (pod: "web_team(u-1)", '
     "container: server)"),
    ("0:0", {}, {"runAsNonRoot": True},
     'container has runAsNonRoot and image will run as root (pod: "web_team(u-1)", '
     "container: server)"),
    ("app", {"runAsNonRoot": True}, {},
     "container has runAsNonRoot and image has non-numeric user (app), cannot verify user "
     'is non-root (pod: "web_team(u-1)", container: server)'),
    ("1000", {"runAsNonRoot": True, "runAsUser": 0}, {},
     'container\'s runAsUser breaks non-root policy (pod: "web_team(u-1)", container: server)'),
    ("", {"runAsNonRoot": True}, {"runAsUser": 1000}, None),
    ("10001:10001", {"runAsNonRoot": True}, {}, None),
    ("app", {"runAsNonRoot": True, "runAsUser": 5}, {}, None),
    ("", {"runAsNonRoot": True}, {"runAsNonRoot": False}, None),
    ("", {}, {}, None),
])
def test_run_as_non_root_is_decided_like_the_kubelet(image_user: str, pod_sc: dict[str, Any],
                                                     container_sc: dict[str, Any],
                                                     error: str | None) -> None:
    p, c = pod(pod_sc, **container_sc)
    if error is None:
        ks.check(p, c, image_user, "/nonexistent")
        return
    with pytest.raises(ks.ConfigError) as exc:
        ks.check(p, c, image_user, "/nonexistent")
    assert str(exc.value) == error


def test_hardened_container_gets_user_groups_and_restrictions(tmp_path: Path) -> None:
    p, c = pod({"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                "supplementalGroups": [4000], "seccompProfile": {"type": "RuntimeDefault"}},
               readOnlyRootFilesystem=True, allowPrivilegeEscalation=False,
               capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
    args = ks.podman_args(p, c, str(tmp_path), unused_image_user)
    assert args == ["--user", "1000:3000", "--group-add", "4000", "--group-add", "2000",
                    "--cap-drop", "all", "--cap-add", "NET_BIND_SERVICE",
                    "--read-only", "--read-only-tmpfs=false",
                    "--security-opt", "no-new-privileges"]


def test_plain_container_gets_containerds_defaults_and_no_seccomp(tmp_path: Path) -> None:
    p, c = pod()
    args = ks.podman_args(p, c, str(tmp_path), unused_image_user)
    assert args[:3] == ["--cap-drop", "all", "--cap-add"]
    assert args[3].split(",") == list(ks.DEFAULT_CAPS)
    assert args[4:] == ["--security-opt", "seccomp=unconfined"]


def test_capabilities_follow_containerd_add_then_drop() -> None:
    assert ks.capabilities({"capabilities": {"add": ["ALL"], "drop": ["CHOWN"]}}) == \
        [c for c in ks.ALL_CAPS if c != "CHOWN"]
    assert ks.capabilities({"capabilities": {"drop": ["NET_RAW", "MKNOD"]}}) == \
        [c for c in ks.DEFAULT_CAPS if c not in ("NET_RAW", "MKNOD")]
    assert ks.capabilities({"capabilities": {"drop": ["ALL"], "add": ["sys_time"]}}) == \
        ["SYS_TIME"]


def test_run_as_group_alone_keeps_the_image_user(tmp_path: Path) -> None:
    p, c = pod({"runAsGroup": 7, "seccompProfile": {"type": "RuntimeDefault"}})
    assert ks.podman_args(p, c, str(tmp_path), lambda: "app:app")[:2] == ["--user", "app:7"]


def test_missing_localhost_seccomp_profile_cannot_be_created(tmp_path: Path) -> None:
    p, c = pod(seccompProfile={"type": "Localhost", "localhostProfile": "nope.json"})
    with pytest.raises(ks.CreateError, match="cannot load seccomp profile"):
        ks.check(p, c, "", str(tmp_path))
    (tmp_path / "seccomp").mkdir()
    (tmp_path / "seccomp" / "nope.json").write_text("{}")
    ks.check(p, c, "", str(tmp_path))
    assert f"seccomp={tmp_path}/seccomp/nope.json" in ks.podman_args(p, c, str(tmp_path),
                                                                      unused_image_user)


def test_fs_group_owns_writable_and_read_only_volumes(tmp_path: Path) -> None:
    empty, secret = tmp_path / "empty", tmp_path / "secret"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "f").write_text("x")
    secret.mkdir()
    (secret / "token").write_text("t")
    os.chmod(secret / "token", 0o600)
    p = {"spec": {"securityContext": {"fsGroup": 4242}, "volumes": [
        {"name": "e", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}},
        {"name": "h", "hostPath": {"path": str(tmp_path / "host")}}]}}
    ks.apply_fs_group(p, {"e": str(empty), "s": str(secret), "h": str(tmp_path)})
    sub = os.stat(empty / "sub")
    assert sub.st_gid == 4242 and sub.st_mode & stat.S_ISGID and sub.st_mode & 0o070 == 0o070
    assert os.stat(empty / "sub" / "f").st_mode & 0o060 == 0o060
    token = os.stat(secret / "token")
    assert token.st_gid == 4242 and stat.S_IMODE(token.st_mode) == 0o640
    assert os.stat(tmp_path).st_gid != 4242  # hostPath is left alone


@pytest.mark.parametrize(("value", "expected"), [
    ("$(A)", "x"), ("$$(A)", "$(A)"), ("$$$(A)", "$x"), ("$(MISSING)", "$(MISSING)"),
    ("a$b", "a$b"), ("$(A", "$(A"), ("$", "$"), ("$$", "$"), ("$$HOME", "$HOME"),
    ("--port=$(A)-$(B)", "--port=x-$(A)"), ("$()", ""),
])
def test_expansion_is_the_kubelets(value: str, expected: str) -> None:
    assert expand(value, {"A": "x", "B": "$(A)", "": ""}) == expected

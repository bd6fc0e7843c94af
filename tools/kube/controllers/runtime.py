"""The container runtime of the stand-in node: podman with runc, pod netns, own storage.

Every podman call goes through :class:`Podman`, which pins the storage under
``STATE_DIR/podman`` (``--root/--runroot/--tmpdir``), the runc runtime and the
cgroupfs manager, so that nothing touches the machine's default podman
storage. Containers join the pod's network namespace, made by the node
(``--network ns:PATH``), so podman never creates a CNI bridge or iptables rule.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kubelet_security

log = logging.getLogger(__name__)

REPO_ROOT = str(Path(__file__).resolve().parents[3])
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def env_float(name: str, default: float) -> float:
    """A number from the stand-in's environment (its tuning knobs); `default` if unset or bad."""
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class RegistryConfig:
    """How the node reaches registries."""

    ca_cert: str | None = None
    """PEM file of a private CA for TLS registries (HARNESS_CA_CERT / KUBE_STANDIN_REGISTRY_CA)."""
    insecure: set[str] = field(default_factory=set)
    """host:port of registries to reach without TLS verification (or over plain HTTP)."""

    @classmethod
    def from_env(cls) -> RegistryConfig:
        ca = os.environ.get("KUBE_STANDIN_REGISTRY_CA") or os.environ.get("HARNESS_CA_CERT")
        insecure = {h.strip() for h in os.environ.get("KUBE_STANDIN_INSECURE_REGISTRIES", "")
                    .split(",") if h.strip()}
        return cls(ca_cert=ca if ca and os.path.exists(ca) else None, insecure=insecure)


def registry_host(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class Podman:
    def __init__(self, state_dir: str, registries: RegistryConfig | None = None) -> None:
        self.base = os.path.join(state_dir, "podman")
        self.registries = registries or RegistryConfig.from_env()
        self.runroot = os.path.join(self.base, "runroot")
        if len(self.runroot) > 50:  # podman refuses a longer runroot ("... longer than 50")
            digest = hashlib.sha256(self.base.encode()).hexdigest()[:12]
            self.runroot = f"/tmp/podman-runroot-{digest}"
        os.makedirs(self.runroot, exist_ok=True)
        for sub in ("root", "tmp", "certs"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        self._plain_http: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}

    def argv(self, *args: str) -> list[str]:
        return ["podman", "--root", os.path.join(self.base, "root"),
                "--runroot", self.runroot,
                "--tmpdir", os.path.join(self.base, "tmp"),
                "--runtime", "runc", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout,
                              check=False)

    # -- registries ---------------------------------------------------------------
    def is_plain_http(self, host: str) -> bool:
        """True when the registry answers plain HTTP (probed once per host)."""
        with self._lock:
            if host in self._plain_http:
                return self._plain_http[host]
        plain = False
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            urllib.request.urlopen(f"https://{host}/v2/", timeout=3, context=ctx)
        except urllib.error.HTTPError:
            plain = False
        except (urllib.error.URLError, OSError, ssl.SSLError):
            try:
                urllib.request.urlopen(f"http://{host}/v2/", timeout=3)
                plain = True
            except urllib.error.HTTPError:
                plain = True
            except (urllib.error.URLError, OSError):
                plain = False
        with self._lock:
            self._plain_http[host] = plain
        return plain

    def tls_args(self, image: str, insecure: bool = False) -> list[str]:
        host = registry_host(image)
        if insecure or host in self.registries.insecure or self.is_plain_http(host):
            return ["--tls-verify=false"]
        if self.registries.ca_cert:
            cert_dir = os.path.join(self.base, "certs", host.replace(":", "_"))
            os.makedirs(cert_dir, exist_ok=True)
            shutil.copyfile(self.registries.ca_cert, os.path.join(cert_dir, "ca.crt"))
            return ["--tls-verify=true", "--cert-dir", cert_dir]
        return ["--tls-verify=true"]

    def image_lock(self, image: str) -> threading.Lock:
        """One pull at a time per image: concurrent pods wait and find it present."""
        with self._lock:
            return self._image_locks.setdefault(image, threading.Lock())

    def image_exists(self, image: str) -> bool:
        return self.run("image", "exists", image, timeout=30).returncode == 0

    def pull(self, image: str, authfile: str | None,
             cancel: threading.Event | None = None) -> tuple[bool, str]:
        args = ["pull", "--quiet", *self.tls_args(image)]
        if authfile:
            args += ["--authfile", authfile]
        proc = subprocess.Popen(self.argv(*args, image), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while True:
            try:
                out, err = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if (cancel is not None and cancel.is_set()) or time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    return False, f"pulling image {image} cancelled or timed out"
        if proc.returncode == 0:
            return True, out.strip()
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        msg = lines[-1] if lines else f"podman pull exited {proc.returncode}"
        return False, msg.removeprefix("Error: ")

    def image_id(self, image: str) -> str:
        res = self.run("image", "inspect", "--format", "{{.Digest}}", image, timeout=30)
        return res.stdout.strip() if res.returncode == 0 else ""

    def image_user(self, image: str) -> str:
        res = self.run("image", "inspect", "--format", "{{.Config.User}}", image, timeout=30)
        return res.stdout.strip() if res.returncode == 0 else ""

    def stop(self, name: str, grace: int) -> None:
        self.run("stop", "--ignore", "-t", str(max(0, grace)), name, timeout=grace + 60)
        self.run("rm", "-f", "--ignore", name, timeout=60)

    def container_exists(self, name: str) -> bool:
        return self.run("container", "exists", name, timeout=60).returncode == 0

    def exec(self, name: str, command: list[str], timeout: float) -> int:
        try:
            return self.run("exec", name, *command, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1

    def list_names(self, prefix: str) -> list[str]:
        res = self.run("ps", "-a", "--format", "{{.Names}}", timeout=60)
        return [n for n in res.stdout.split() if n.startswith(prefix)]


def write_authfile(path: str, dockerconfigs: list[dict[str, Any]]) -> str | None:
    """Merge docker config JSON documents (``auths``) into one auth file."""
    auths: dict[str, Any] = {}
    for cfg in dockerconfigs:
        entries = cfg.get("auths", cfg) if isinstance(cfg, dict) else {}
        for host, entry in entries.items():
            if not isinstance(entry, dict):
                continue
            if "auth" not in entry and "username" in entry:
                raw = f"{entry['username']}:{entry.get('password', '')}".encode()
                entry = {**entry, "auth": base64.b64encode(raw).decode()}
            key = host.removeprefix("https://").removeprefix("http://").rstrip("/")
            key = key.removesuffix("/v1").removesuffix("/v2").rstrip("/")
            auths[key] = entry
    if not auths:
        return None
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"auths": auths}, fh)
    os.chmod(path, 0o600)
    return path


class ContainerProcess:
    """A running container: the attached ``podman run`` (or a Kaniko shim) process."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], kaniko: bool) -> None:
        self.name = name
        self.proc = proc
        self.kaniko = kaniko

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, podman: Podman, grace: int) -> None:
        if self.kaniko:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            return
        podman.stop(self.name, grace)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            # the container was still being created when stop came: try again
            podman.stop(self.name, 0)
            self.proc.kill()
            self.proc.wait()
        # a `podman run` killed while creating may still leave a container behind
        for _ in range(3):
            if not podman.container_exists(self.name):
                return
            podman.stop(self.name, 0)
            time.sleep(0.5)


def _expand_all(values: list[str], env: dict[str, str]) -> list[str]:
    from .podspec import expand
    return [expand(str(v), env) for v in values]


def start_container(podman: Podman, name: str, spec: dict[str, Any], pod: dict[str, Any],
                    env: dict[str, str], mounts: list[tuple[str, str, bool]], log_path: str,
                    kaniko: bool, state_dir: str, scratch_root: str = "",
                    netns: str = "") -> ContainerProcess:
    """Start one container attached, its output appended to ``log_path``.

    ``netns`` is the pod's network namespace (all containers of a pod share it);
    empty means the host network (kept for callers without a pod network)."""
    command = _expand_all(spec.get("command") or [], env)
    args = _expand_all(spec.get("args") or [], env)
    logfh = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        if kaniko:
            argv = [sys.executable, "-m", "tools.kube.controllers.kaniko"]
            if command and not command[0].endswith("executor"):
                argv += command
            elif command:
                argv += command[1:]
            argv += args
            child_env = {k: v for k, v in os.environ.items()
                         if k in ("PATH", "HOME", "LANG", "TMPDIR", "HARNESS_CA_CERT",
                                  "KUBE_STANDIN_REGISTRY_CA", "KUBE_STANDIN_INSECURE_REGISTRIES")}
            child_env.update(env)
            child_env["KANIKO_SHIM_MOUNTS"] = json.dumps(
                {ctr: host for host, ctr, _ro in mounts})
            child_env["KANIKO_SHIM_STATE_DIR"] = state_dir
            if scratch_root:
                os.makedirs(scratch_root, exist_ok=True)
                child_env["KANIKO_SHIM_ROOT"] = scratch_root
            child_env["PYTHONPATH"] = REPO_ROOT
            child_env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            if netns:  # in the pod's network, as the real executor: registries, not 127.0.0.1
                argv = ["ip", "netns", "exec", os.path.basename(netns), *argv]
            proc = subprocess.Popen(argv, stdout=logfh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=child_env,
                                    start_new_session=True)
            return ContainerProcess(name, proc, True)
        network = f"ns:{netns}" if netns else "host"
        run = ["run", "--rm", "--name", name, "--network", network, "--init", *ULIMITS,
               "--log-driver", "none", "--pull", "never"]
        if netns:
            run += ["--hostname", pod["metadata"]["name"][:63]]
        for k, v in env.items():
            run += ["-e", f"{k}={v}"]
        for host, ctr, ro in mounts:
            run += ["-v", f"{host}:{ctr}" + (":ro" if ro else "")]
        if spec.get("workingDir"):
            run += ["--workdir", spec["workingDir"]]
        # user, groups, capabilities, read-only root, seccomp: what a kubelet applies
        run += kubelet_security.podman_args(pod, spec, state_dir,
                                            lambda: podman.image_user(spec["image"]))
        if command:
            run += ["--entrypoint", json.dumps(command)]
        run += [spec["image"], *args]
        proc = subprocess.Popen(podman.argv(*run), stdout=logfh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        return ContainerProcess(name, proc, False)
    finally:
        logfh.close()

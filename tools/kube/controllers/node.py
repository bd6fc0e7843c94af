"""The stand-in kubelet (plus a tiny scheduler): runs pods' containers with podman.

One node, ``harness-node``. Every pod gets a network namespace of its own with
an address on the harness bridge (``tools/harnesslib/netns.py``), like a CNI
plugin: containers listen on their declared ``containerPort``; probes, Endpoints
and the ingress reach them at ``status.podIP``. Container output goes to
``STATE_DIR/logs/<ns>/<pod>/<container>.log``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import requests

from tools.harnesslib.netns import NetError, PodNetwork

from . import kubelet_security, podspec
from .client import ApiError, Informer, KubeClient, Obj, key_of, now_iso
from .image_gc import GCPolicy, ImageGC
from .image_volumes import ImageVolumeError, mount_image_volumes, unmount_image_volumes
from .netpolicy import EgressEnforcer
from .runtime import ContainerProcess, Podman, env_float, start_container, write_authfile

log = logging.getLogger(__name__)

NODE_NAME = "harness-node"
POD_INDEXES = range(2, 255)  # host numbers of pod addresses in the /24 (.1 is the harness)


BACKOFF_BASE = env_float("KUBE_STANDIN_BACKOFF_BASE", 1.0)
BACKOFF_MAX = env_float("KUBE_STANDIN_BACKOFF_MAX", 20.0)
MAX_GRACE = env_float("KUBE_STANDIN_MAX_GRACE", 10.0)


def is_kaniko(image: str) -> bool:
    """Kaniko executor images the shim stands in for (known executors and their mirrors)."""
    from .kaniko import is_executor

    return is_executor(image)


def parse_cpu(q: Any) -> float:
    s = str(q or "0")
    if s.endswith("m"):
        return float(s[:-1]) / 1000
    return float(s)


_MEM = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "k": 10**3,
        "M": 10**6, "G": 10**9, "T": 10**12}


def parse_mem(q: Any) -> float:
    s = str(q or "0")
    m = re.fullmatch(r"([0-9.eE+-]+)([A-Za-z]*)", s)
    if not m:
        return 0.0
    return float(m.group(1)) * _MEM.get(m.group(2), 1)


def pod_requests(pod: Obj) -> tuple[float, float]:
    cpu = mem = 0.0
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        cpu += parse_cpu(req.get("cpu"))
        mem += parse_mem(req.get("memory"))
    return cpu, mem


def qos_class(pod: Obj) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests_ = r.get("limits") or {}, r.get("requests") or {}
        for key in ("cpu", "memory"):
            if key not in limits or str(requests_.get(key, limits[key])) != str(limits[key]):
                return "Burstable"
    return "Guaranteed"


class Probe:
    """State of one probe of one container."""

    def __init__(self, kind: str, spec: Obj) -> None:
        self.kind = kind
        self.spec = spec
        self.initial = float(spec.get("initialDelaySeconds", 0))
        self.period = float(spec.get("periodSeconds", 10))
        self.timeout = float(spec.get("timeoutSeconds", 1))
        self.success_threshold = int(spec.get("successThreshold", 1))
        self.failure_threshold = int(spec.get("failureThreshold", 3))
        self.next_at = 0.0
        self.successes = 0
        self.failures = 0
        self.last_message = ""


class Container:
    """One container of a pod, across restarts."""

    def __init__(self, spec: Obj, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.init = init
        self.phase = "pull"  # pull | start | running | backoff | done
        self.pulled = False
        self.pull_failures = 0
        self.next_try = 0.0
        self.backoff_len = 0.0
        self.term_host = ""
        self.proc: ContainerProcess | None = None
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.started_at = 0.0
        self.image_id = ""
        self.probes: dict[str, Probe] = {
            k: Probe(k, spec[p]) for k, p in (("readiness", "readinessProbe"),
                                             ("liveness", "livenessProbe"),
                                             ("startup", "startupProbe")) if spec.get(p)}
        self.startup_done = "startup" not in self.probes

    def status(self) -> Obj:
        st: Obj = {"name": self.name, "image": self.image, "imageID": self.image_id,
                   "ready": self.ready, "restartCount": self.restart_count,
                   "started": self.started, "state": self.state, "lastState": self.last_state}
        if self.proc:
            st["containerID"] = f"podman://{self.proc.name}"
        return st


class PodWorker(threading.Thread):
    """Runs one pod until it is deleted, it completes, or the node stops."""

    def __init__(self, node: Node, pod: Obj) -> None:
        md = pod["metadata"]
        super().__init__(name=f"pod-{md.get('namespace')}-{md['name']}", daemon=True)
        self.node = node
        self.client = node.client
        self.pod = pod
        self.uid: str = md.get("uid") or md["name"]
        self.ns: str = md.get("namespace") or "default"
        self.pod_name: str = md["name"]
        self.gone = threading.Event()  # pod deleted or node stopping
        self.pod_dir = os.path.join(node.state_dir, "pods", self.uid)
        self.log_dir = os.path.join(node.state_dir, "logs", self.ns, self.pod_name)
        spec = pod.get("spec") or {}
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.inits = [Container(c, True) for c in spec.get("initContainers") or []]
        self.mains = [Container(c, False) for c in spec.get("containers") or []]
        if self.inits:
            for c in self.mains:
                c.state = {"waiting": {"reason": "PodInitializing"}}
        self.net_index = 0
        self.pod_ip = ""
        self.netns_path = ""
        self.volumes: dict[str, str] = {}
        self.image_mounts: dict[str, str] = {}  # image volumes: always mounted read-only
        self.authfile: str | None = None
        self.phase = "Pending"
        self.initialized = not self.inits
        self.ever_running = False
        self.finished = False
        self.start_time = now_iso()
        self.conditions_since: dict[str, str] = {}
        self.last_status: str = ""
        self.mount_error = ""

    # -- helpers ---------------------------------------------------------------------
    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.client.event(self.pod, reason, message, type_)

    def _create_sandbox(self) -> bool:
        """The pod's network namespace and address (the CNI ADD of a real kubelet)."""
        with self.node.net_lock:
            # round robin like host-local IPAM: a just-freed address is not reused at once
            free = [i for i in POD_INDEXES if i not in self.node.used_indexes]
            if not free:
                self._sandbox_failed("no free pod address left on the harness bridge")
                return False
            self.net_index = next((i for i in free if i > self.node.last_index), free[0])
            self.node.last_index = self.net_index
            self.node.used_indexes.add(self.net_index)
        try:
            self.netns_path = self.node.net.add_pod(self.net_index)
        except NetError as exc:
            self._release()
            self._sandbox_failed(str(exc))
            return False
        self.pod_ip = self.node.net.pod_ip(self.net_index)
        return True

    def _enforce_egress(self) -> bool:
        """The pod's NetworkPolicy egress rules, before any of its containers starts."""
        self.node.egress.forget(self.netns_path)  # a fresh namespace has no rules yet
        try:
            self.node.egress.apply(self, self.node.sandboxes())
            return True
        except RuntimeError as exc:
            self._release()
            self._sandbox_failed(str(exc))
            return False

    def _sandbox_failed(self, why: str) -> None:
        self.event("FailedCreatePodSandBox", "Failed to create pod sandbox: rpc error: "
                   f"code = Unknown desc = failed to setup network for sandbox: {why}",
                   "Warning")

    def target_port(self, port: Any) -> int | None:
        """A probe's port: a number, or the name of a container port of the pod."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for c in self.mains + self.inits:
            for p in c.spec.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
        return None

    def _release(self) -> None:
        if self.image_mounts:
            unmount_image_volumes(self.node.podman, self.pod, self.image_mounts)
            self.image_mounts = {}
        if self.net_index:
            self.node.net.del_pod(self.net_index)
            with self.node.net_lock:
                self.node.used_indexes.discard(self.net_index)
            self.net_index = 0

    # -- status ----------------------------------------------------------------------
    def _condition(self, ctype: str, ok: bool, reason: str | None = None) -> Obj:
        status = "True" if ok else "False"
        key = f"{ctype}={status}"
        since = self.conditions_since.setdefault(key, now_iso())
        for other in ("True", "False"):
            if other != status:
                self.conditions_since.pop(f"{ctype}={other}", None)
        cond: Obj = {"type": ctype, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": since}
        if reason:
            cond["reason"] = reason
        return cond

    def push_status(self) -> None:
        ready = self.phase == "Running" and all(c.ready for c in self.mains)
        not_ready = [c.name for c in self.mains if not c.ready]
        reason = None
        if not ready:
            reason = "PodCompleted" if self.phase in ("Succeeded", "Failed") else \
                "ContainersNotReady"
        host_ip = self.node.net.gateway
        status: Obj = {
            "phase": self.phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time, "qosClass": qos_class(self.pod),
            "conditions": [
                self._condition("PodScheduled", True),
                self._condition("Initialized", self.initialized,
                                None if self.initialized else "ContainersNotInitialized"),
                self._condition("ContainersReady", ready, reason),
                self._condition("Ready", ready, reason),
            ],
            "containerStatuses": [c.status() for c in self.mains],
        }
        if self.pod_ip:
            status["podIP"], status["podIPs"] = self.pod_ip, [{"ip": self.pod_ip}]
        if self.inits:
            status["initContainerStatuses"] = [c.status() for c in self.inits]
        if not ready and not_ready and self.phase not in ("Succeeded", "Failed"):
            status["conditions"][2]["message"] = status["conditions"][3]["message"] = \
                f"containers with unready status: [{' '.join(not_ready)}]"
        if self.mount_error:
            status["message"] = self.mount_error
        # lastTransitionTime etc. don't change between identical states
        fingerprint = json.dumps(status, sort_keys=True)
        if fingerprint == self.last_status:
            return
        try:
            if self.client.patch_status("pods", self.ns, self.pod_name, status) is None:
                self.gone.set()
                return
            self.last_status = fingerprint
        except (ApiError, requests.RequestException) as exc:
            log.debug("pod %s/%s status not written: %s", self.ns, self.pod_name, exc)

    # -- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod worker %s/%s failed", self.ns, self.pod_name)
        finally:
            self._stop_all(self.node.grace_for(self.pod))
            self._release()
            shutil.rmtree(self.pod_dir, ignore_errors=True)
            self.node.worker_done(self)

    def _prepare(self) -> bool:
        while not self._create_sandbox() or not self._enforce_egress():
            if self.gone.wait(5):
                return False
        self.push_status()
        os.makedirs(self.log_dir, exist_ok=True)
        os.makedirs(self.pod_dir, exist_ok=True)
        while not self.gone.is_set():
            try:
                self.volumes = podspec.prepare_volumes(self.client, self.pod, self.pod_dir,
                                                       self.node.state_dir)
                kubelet_security.apply_fs_group(self.pod, self.volumes)
                configs = podspec.docker_configs(self.client, self.pod)
                self.authfile = write_authfile(os.path.join(self.pod_dir, "auth.json"), configs)
                self.image_mounts = mount_image_volumes(self.node.podman, self.pod,
                                                        self.authfile, self.gone, self.event)
                self.volumes.update(self.image_mounts)
                self.mount_error = ""
                return True
            except ImageVolumeError as exc:
                self.event(exc.reason, exc.message, "Warning")  # aggregated when repeated
                self.mount_error = exc.message
                self.push_status()
                self.gone.wait(10)  # the kubelet backs off image pulls
            except podspec.MountError as exc:
                msg = f"MountVolume.SetUp failed: {exc}"
                if msg != self.mount_error:
                    self.event("FailedMount", msg, "Warning")
                self.mount_error = msg
                self.push_status()
                self.gone.wait(2)
        return False

    def _run(self) -> None:
        if not self._prepare():
            return
        while not self.gone.is_set():
            if not self.initialized:
                self._step_inits()
            else:
                self._step_mains()
            self.push_status()
            if self.finished:
                return
            self.gone.wait(0.25)

    def _step_inits(self) -> None:
        for c in self.inits:
            if c.phase == "done":
                if c.state.get("terminated", {}).get("exitCode", 0) != 0:
                    return  # failed for good (restartPolicy Never): never initialized
                continue
            self._step_container(c)
            if c.phase != "done" or self.finished:
                return
        self.initialized = True
        for c in self.mains:
            c.state = {"waiting": {"reason": "ContainerCreating"}}

    def _step_mains(self) -> None:
        for c in self.mains:
            self._step_container(c)
        if any(c.phase in ("running", "backoff") for c in self.mains):
            self.phase = "Running" if self.ever_running else "Pending"
        elif all(c.phase == "done" for c in self.mains):
            failed = any(c.state.get("terminated", {}).get("exitCode", 1) != 0
                         for c in self.mains)
            self.phase = "Failed" if failed else "Succeeded"
            self.finished = True

    def _should_restart(self, c: Container, code: int) -> bool:
        if self.restart_policy == "Never":
            return False
        if self.restart_policy == "OnFailure" or c.init:
            return code != 0
        return True

    def _step_container(self, c: Container) -> None:
        now = time.monotonic()
        if c.phase == "pull":
            if now < c.next_try:
                if c.pull_failures and now > c.next_try - c.backoff_len + 1:
                    msg = c.state.get("waiting", {}).get("message", "")
                    msg = msg or f'Back-off pulling image "{c.image}"'
                    c.state = {"waiting": {"reason": "ImagePullBackOff", "message": msg}}
                return
            self._pull(c)
        if c.phase == "start":
            self._start(c)
        if c.phase == "running":
            self._check_running(c)
        if c.phase == "backoff" and now >= c.next_try:
            c.phase = "start"
            self._start(c)

    def _pull(self, c: Container) -> None:
        if is_kaniko(c.image):
            c.phase = "start"
            return
        policy = c.spec.get("imagePullPolicy") or (
            "Always" if c.image.endswith(":latest") or ":" not in c.image.rsplit("/", 1)[-1]
            else "IfNotPresent")
        with self.node.podman.image_lock(c.image):
            self._pull_locked(c, policy)

    def _pull_locked(self, c: Container, policy: str) -> None:
        podman = self.node.podman
        if policy != "Always" and podman.image_exists(c.image):
            c.phase = "start"
            c.image_id = podman.image_id(c.image)
            return
        if policy == "Never":
            c.state = {"waiting": {"reason": "ErrImageNeverPull",
                                   "message": f'Container image "{c.image}" is not present '
                                              "with pull policy of Never"}}
            c.next_try = time.monotonic() + 5
            return
        self.event("Pulling", f'Pulling image "{c.image}"')
        t0 = time.monotonic()
        ok, msg = podman.pull(c.image, self.authfile, cancel=self.gone)
        if self.gone.is_set():
            return
        if ok:
            c.phase = "start"
            c.image_id = podman.image_id(c.image)
            c.pull_failures = 0
            self.event("Pulled", f'Successfully pulled image "{c.image}" in '
                                 f"{time.monotonic() - t0:.3f}s")
            return
        c.pull_failures += 1
        message = f'failed to pull and unpack image "{c.image}": {msg}'
        c.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
        self.event("Failed", f'Failed to pull image "{c.image}": {msg}', "Warning")
        self.event("Failed", "Error: ErrImagePull", "Warning")
        c.backoff_len = min(BACKOFF_MAX, 2 * BACKOFF_BASE * 2 ** c.pull_failures)
        c.next_try = time.monotonic() + c.backoff_len
        self.event("BackOff", f'Back-off pulling image "{c.image}"')

    def _start(self, c: Container) -> None:
        try:
            env = podspec.resolve_env(self.client, self.pod, c.spec, self.pod_ip,
                                      self.node.net.gateway)
            mounts = podspec.mounts(c.spec, self.volumes, read_only=set(self.image_mounts))
        except podspec.MountError as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.event("Failed", f"Error: {exc}", "Warning")
            c.phase = "backoff"
            c.next_try = time.monotonic() + 2
            return
        try:
            # the Kaniko executor image has no USER: it runs as root
            user = "" if is_kaniko(c.image) else self.node.podman.image_user(c.image)
            kubelet_security.check(self.pod, c.spec, user, self.node.state_dir)
        except (kubelet_security.ConfigError, kubelet_security.CreateError) as exc:
            reason = "CreateContainerConfigError" if isinstance(
                exc, kubelet_security.ConfigError) else "CreateContainerError"
            c.state = {"waiting": {"reason": reason, "message": str(exc)}}
            self.event("Failed", f"Error: {exc}", "Warning")
            c.phase = "backoff"
            c.next_try = time.monotonic() + 10
            return
        name = f"k8s_{c.name}_{self.pod_name}_{self.ns}_{self.uid[:8]}_{c.restart_count}"
        log_path = os.path.join(self.log_dir, f"{c.name}.log")
        # terminationMessagePath: a host file bind-mounted into the container
        c.term_host = os.path.join(self.pod_dir, "termination", f"{c.name}-{c.restart_count}")
        os.makedirs(os.path.dirname(c.term_host), exist_ok=True)
        open(c.term_host, "w").close()
        os.chmod(c.term_host, 0o666)
        mounts = [*mounts, (c.term_host,
                            c.spec.get("terminationMessagePath") or "/dev/termination-log", False)]
        scratch = os.path.join(self.pod_dir, "rootfs", c.name)
        try:
            c.proc = start_container(self.node.podman, name, c.spec, self.pod, env, mounts,
                                     log_path, kaniko=is_kaniko(c.image),
                                     state_dir=self.node.state_dir, scratch_root=scratch,
                                     netns=self.netns_path)
        except OSError as exc:
            c.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
            c.phase = "backoff"
            c.next_try = time.monotonic() + 2
            return
        if self.gone.is_set():
            return
        c.phase = "running"
        c.started_at = time.monotonic()
        c.state = {"running": {"startedAt": now_iso()}}
        c.started = c.startup_done
        c.ready = False
        for p in c.probes.values():
            p.next_at = c.started_at + p.initial
            p.successes = p.failures = 0
        c.startup_done = "startup" not in c.probes
        if not c.init:
            self.ever_running = True
        self.event("Created", f"Created container {c.name}")
        self.event("Started", f"Started container {c.name}")

    def _check_running(self, c: Container) -> None:
        assert c.proc is not None
        code = c.proc.poll()
        if code is None:
            self._probe(c)
            return
        finished = now_iso()
        started = c.state.get("running", {}).get("startedAt", finished)
        reason = "Completed" if code == 0 else "Error"
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished,
                "containerID": f"podman://{c.proc.name}"}
        message = self._termination_message(c, code)
        if message:
            term["message"] = message
        c.ready = False
        c.started = False
        c.proc = None
        if self._should_restart(c, code):
            c.last_state = {"terminated": term}
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** c.restart_count)
            if time.monotonic() - c.started_at > 60:
                delay = BACKOFF_BASE
            c.restart_count += 1
            c.phase = "backoff"
            c.next_try = time.monotonic() + delay
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {delay:g}s restarting failed container="
                                              f"{c.name} pod={self.pod_name}_{self.ns}"
                                              f"({self.uid})"}}
            self.event("BackOff", "Back-off restarting failed container "
                                  f"{c.name} in pod {self.pod_name}_{self.ns}({self.uid})",
                       "Warning")
        else:
            c.state = {"terminated": term}
            c.phase = "done"
            if c.init and code != 0:
                # restartPolicy Never: the pod fails
                self.phase = "Failed"
                self.finished = True

    def _termination_message(self, c: Container, code: int) -> str:
        """terminationMessagePath content, or the log tail (FallbackToLogsOnError)."""
        message = ""
        try:
            with open(c.term_host, "rb") as fh:
                message = fh.read(4096).decode(errors="replace")
        except OSError:
            pass
        if not message.strip() and code != 0 and \
                c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                with open(os.path.join(self.log_dir, f"{c.name}.log"), "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, fh.tell() - 2048))
                    message = "\n".join(fh.read().decode(errors="replace")
                                        .splitlines()[-80:])
            except OSError:
                pass
        return message

    # -- probes ---------------------------------------------------------------------------
    def _run_probe(self, c: Container, probe: Probe) -> tuple[bool, str]:
        spec = probe.spec
        if "httpGet" in spec:
            hg = spec["httpGet"]
            scheme = (hg.get("scheme") or "HTTP").lower()
            port = self.target_port(hg.get("port"))
            path = hg.get("path") or "/"
            if not path.startswith("/"):
                path = "/" + path
            host = hg.get("host") or self.pod_ip
            if port is None:
                return False, f"unknown port {hg.get('port')!r}"
            url = f"{scheme}://{host}:{port}{path}"
            req = urllib.request.Request(url)
            for h in hg.get("httpHeaders") or []:
                req.add_header(h["name"], h["value"])
            # like the kubelet: an HTTPS probe does not verify the certificate
            insecure = ssl._create_unverified_context() if scheme == "https" else None
            try:
                with urllib.request.urlopen(req, timeout=probe.timeout,
                                            context=insecure) as resp:
                    return 200 <= resp.status < 400, f"HTTP probe returned {resp.status}"
            except urllib.error.HTTPError as exc:
                return 200 <= exc.code < 400, f"HTTP probe failed with statuscode: {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                return False, f'Get "{url}": {exc}'
        if "tcpSocket" in spec or "grpc" in spec:
            port = self.target_port((spec.get("tcpSocket") or spec.get("grpc") or {}).get("port"))
            if port is None:
                return False, "unknown port"
            try:
                with socket.create_connection((self.pod_ip, port), timeout=probe.timeout):
                    return True, ""
            except OSError as exc:
                return False, f"dial tcp {self.pod_ip}:{port}: {exc}"
        if "exec" in spec:
            cmd = spec["exec"].get("command") or []
            if c.proc is None or c.proc.kaniko:
                return True, ""
            code = self.node.podman.exec(c.proc.name, cmd, max(probe.timeout, 1) + 5)
            return code == 0, f"command {cmd} exited with {code}"
        return True, ""

    def _probe(self, c: Container) -> None:
        now = time.monotonic()
        running_for = now - c.started_at
        if not c.startup_done:
            p = c.probes["startup"]
            if now >= p.next_at:
                ok, msg = self._run_probe(c, p)
                p.next_at = now + min(p.period, 0.5)
                if ok:
                    c.startup_done = True
                    c.started = True
                elif running_for > p.initial + p.period * p.failure_threshold:
                    self.event("Unhealthy", f"Startup probe failed: {msg}", "Warning")
                    self._kill_for_restart(c, "failed startup probe")
                    return
            if not c.startup_done:
                return
        c.started = True
        live = c.probes.get("liveness")
        if live and now >= live.next_at:
            ok, msg = self._run_probe(c, live)
            live.next_at = now + live.period
            if ok:
                live.failures = 0
            else:
                live.failures += 1
                self.event("Unhealthy", f"Liveness probe failed: {msg}", "Warning")
                if live.failures >= live.failure_threshold:
                    self._kill_for_restart(c, "failed liveness probe")
                    return
        ready_p = c.probes.get("readiness")
        if ready_p is None:
            c.ready = True
            return
        if now >= ready_p.next_at:
            ok, msg = self._run_probe(c, ready_p)
            ready_p.next_at = now + (ready_p.period if c.ready else min(ready_p.period, 0.5))
            if ok:
                ready_p.failures = 0
                ready_p.successes += 1
                if ready_p.successes >= ready_p.success_threshold:
                    c.ready = True
            else:
                ready_p.successes = 0
                ready_p.failures += 1
                if c.ready and ready_p.failures >= ready_p.failure_threshold:
                    c.ready = False
                    self.event("Unhealthy", f"Readiness probe failed: {msg}", "Warning")

    def _kill_for_restart(self, c: Container, why: str) -> None:
        self.event("Killing", f"Container {c.name} {why}, will be restarted")
        if c.proc:
            c.proc.stop(self.node.podman, int(min(MAX_GRACE, 2)))

    def _stop_all(self, grace: int) -> None:
        running = [c for c in self.inits + self.mains if c.proc is not None]
        if not running:
            return
        for c in self.mains:
            if c.proc is not None and not self.node.stopping.is_set():
                self.event("Killing", f"Stopping container {c.name}")
        threads = [threading.Thread(target=self._stop_one, args=(c, grace)) for c in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in self.inits + self.mains:
            c.proc = None

    def _stop_one(self, c: Container, grace: int) -> None:
        """The kubelet's order: the preStop hook, then SIGTERM, all within the grace period
        (a node that shuts down skips the hooks)."""
        proc = c.proc
        if proc is None:
            return
        hook = (c.spec.get("lifecycle") or {}).get("preStop") or {}
        started = time.monotonic()
        try:
            if hook and not self.node.stopping.is_set() and not proc.kaniko:
                if isinstance(hook.get("sleep"), dict):
                    seconds = float(hook["sleep"].get("seconds") or 0)
                    self.node.stopping.wait(min(seconds, grace))
                elif isinstance(hook.get("exec"), dict):
                    command = [str(a) for a in hook["exec"].get("command") or []]
                    if self.node.podman.exec(proc.name, command, timeout=grace) != 0:
                        self.event("FailedPreStopHook", "PreStopHook failed", "Warning")
                # httpGet / tcpSocket hooks: not run (docs/kube-standin.md)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("preStop hook of %s failed: %s", proc.name, exc)
        finally:
            # the kubelet gives SIGTERM at least 2 s after a hook that used the grace period
            left = max(2, math.ceil(grace - (time.monotonic() - started)))
            proc.stop(self.node.podman, left)


class Node:
    """Schedules pods onto ``harness-node`` and runs them."""

    def __init__(self, client: KubeClient, state_dir: str, stop: threading.Event) -> None:
        self.client = client
        self.state_dir = state_dir
        self.stopping = stop
        self.podman = Podman(state_dir)
        self.pods = Informer(client, "pods", stop, on_change=self._on_change, resync=20)
        self.wake = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        configured = os.environ.get("KUBE_STANDIN_POD_NETWORK")
        # the harness passes its network; alone, the node makes one of its own
        self.net = PodNetwork.from_env(configured) if configured else \
            PodNetwork.for_key(os.path.abspath(state_dir))
        self.owns_net = not configured
        self.used_indexes: set[int] = set()
        self.last_index = 0
        self.net_lock = threading.Lock()
        self.cpu = parse_cpu(os.environ.get("KUBE_STANDIN_NODE_CPU", "8"))
        self.memory = parse_mem(os.environ.get("KUBE_STANDIN_NODE_MEMORY", "32Gi"))
        self.unschedulable_events: dict[str, float] = {}
        self.egress = EgressEnforcer(client, stop, self.wake)
        self.image_gc = ImageGC(self.podman, GCPolicy.from_env(), self._node_event,
                                pod_images=self._pod_images, server_minor=self._server_minor)
        self.image_gc_thread: threading.Thread | None = None

    def sandboxes(self) -> list[PodWorker]:
        """Workers whose pod has a network namespace (for NetworkPolicy peers and rules)."""
        with self.lock:
            return [w for w in self.workers.values() if w.netns_path and not w.gone.is_set()]

    def _on_change(self, kind: str, obj: Obj) -> None:
        uid = obj.get("metadata", {}).get("uid")
        with self.lock:
            worker = self.workers.get(uid) if uid else None
        if worker:
            if kind == "DELETED" or obj.get("metadata", {}).get("deletionTimestamp"):
                worker.gone.set()
            else:
                worker.pod = obj
        self.wake.set()

    def grace_for(self, pod: Obj) -> int:
        if self.stopping.is_set():
            return 2
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return int(min(MAX_GRACE, grace if grace is not None else 30))

    def worker_done(self, worker: PodWorker) -> None:
        with self.lock:
            # keep a tombstone for finished pods so they are not started again
            if self.workers.get(worker.uid) is worker and not worker.finished:
                del self.workers[worker.uid]
        self.wake.set()

    def register(self) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE_NAME, "labels": {
                "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/control-plane": ""}},
            "spec": {},
        }
        capacity = {"cpu": os.environ.get("KUBE_STANDIN_NODE_CPU", "8"),
                    "memory": os.environ.get("KUBE_STANDIN_NODE_MEMORY", "32Gi"),
                    "pods": "110", "ephemeral-storage": "100Gi"}
        status = {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": self.net.gateway},
                          {"type": "Hostname", "address": NODE_NAME}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": now_iso(), "lastTransitionTime": now_iso()}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-harness", "containerRuntimeVersion":
                         "podman://4", "operatingSystem": "linux", "architecture": "amd64",
                         "osImage": "harness", "kernelVersion": os.uname().release,
                         "machineID": "", "systemUUID": "", "bootID": "",
                         "kubeProxyVersion": ""},
        }
        try:
            if self.client.get("nodes", None, NODE_NAME) is None:
                self.client.create("nodes", None, node)
            self.client.patch_status("nodes", None, NODE_NAME, status)
        except (ApiError, requests.RequestException) as exc:
            log.info("node object not registered: %s", exc)

    def cleanup_leftovers(self) -> None:
        for _ in range(3):
            names = self.podman.list_names("k8s_")
            if not names:
                break
            for name in names:
                self.podman.stop(name, 0)
        for ns in self.net.namespaces():  # pods of an earlier run of this node
            self.net.del_pod(int(ns.rsplit("-", 1)[1]))

    # -- scheduling -----------------------------------------------------------------
    def _schedule(self, pod: Obj, pods: list[Obj]) -> None:
        md = pod["metadata"]
        cpu, mem = pod_requests(pod)
        used_cpu = used_mem = 0.0
        for other in pods:
            if (other.get("spec") or {}).get("nodeName") == NODE_NAME and \
                    (other.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                c, m = pod_requests(other)
                used_cpu += c
                used_mem += m
        lacking = []
        if used_cpu + cpu > self.cpu:
            lacking.append("Insufficient cpu")
        if used_mem + mem > self.memory:
            lacking.append("Insufficient memory")
        ns = md.get("namespace") or "default"
        if lacking:
            msg = f"0/1 nodes are available: {', '.join('1 ' + x for x in lacking)}. " \
                  "preemption: 0/1 nodes are available: 1 No preemption victims found for " \
                  "incoming pod."
            key = md.get("uid", md["name"])
            if time.monotonic() - self.unschedulable_events.get(key, -1e9) > 30:
                self.unschedulable_events[key] = time.monotonic()
                self.client.event(pod, "FailedScheduling", msg, "Warning",
                                  component="default-scheduler")
                self.client.patch_status("pods", ns, md["name"], {
                    "phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False",
                                    "reason": "Unschedulable", "message": msg,
                                    "lastProbeTime": None, "lastTransitionTime": now_iso()}]})
            return
        self.unschedulable_events.pop(md.get("uid", md["name"]), None)
        try:
            self.client.patch("pods", ns, md["name"], {"spec": {"nodeName": NODE_NAME}})
        except ApiError:
            self.client.request("POST", self.client.path("pods", ns, md["name"], "binding"), {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE_NAME}})
        self.client.event(pod, "Scheduled",
                          f"Successfully assigned {ns}/{md['name']} to {NODE_NAME}",
                          component="default-scheduler")
        pod.setdefault("spec", {})["nodeName"] = NODE_NAME
        self._start_worker(pod)

    def _start_worker(self, pod: Obj) -> None:
        uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
        with self.lock:
            if uid in self.workers:
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
        worker.start()

    def sync(self) -> None:
        pods = self.pods.items()
        live_uids = set()
        for pod in pods:
            md = pod.get("metadata", {})
            uid = md.get("uid") or md.get("name")
            live_uids.add(uid)
            if md.get("deletionTimestamp"):
                continue
            spec = pod.get("spec") or {}
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            node_name = spec.get("nodeName")
            try:
                if not node_name:
                    self._schedule(pod, pods)
                elif node_name == NODE_NAME:
                    self._start_worker(pod)
            except (ApiError, requests.RequestException) as exc:
                log.info("pod %s not scheduled: %s", key_of(pod), exc)
        with self.lock:
            for uid, worker in list(self.workers.items()):
                if uid not in live_uids:
                    worker.gone.set()
                    if worker.finished or not worker.is_alive():
                        del self.workers[uid]
        self.egress.sync(self.sandboxes())

    def run(self) -> None:
        # one node per podman storage: a second launcher on the same state dir would
        # remove the first one's containers
        with open(os.path.join(self.podman.base, "node.lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                log.error("another node already runs on %s: node not started", self.state_dir)
                return
            self._run()

    def _run(self) -> None:
        self.net.ensure_bridge()
        self.cleanup_leftovers()
        self.register()
        informer = threading.Thread(target=self.pods.run, name="node-pod-informer", daemon=True)
        informer.start()
        self.pods.synced.wait(30)
        self.egress.start()
        self.image_gc_thread = threading.Thread(target=self._collect_images,
                                                name="node-image-gc", daemon=True)
        self.image_gc_thread.start()
        while not self.stopping.is_set():
            self.wake.clear()
            try:
                self.sync()
            except Exception:
                log.exception("node sync failed")
            self.wake.wait(1.0)
        self.shutdown()

    def _collect_images(self) -> None:
        """The kubelet's image GC loop: at once, then every period."""
        while True:
            try:
                self.image_gc.collect()
            except Exception as exc:  # the kubelet's ImageGCFailed: logged, tried again
                log.warning("image garbage collection failed: %s", exc)
            if self.stopping.wait(self.image_gc.policy.period):
                return

    def _pod_images(self) -> set[str]:
        """Container images and image volumes of the pods bound here, until deleted."""
        refs: set[str] = set()
        for pod in self.pods.items():
            spec = pod.get("spec") or {}
            if spec.get("nodeName") != NODE_NAME:
                continue
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                refs.add(str(c.get("image") or ""))
            for vol in spec.get("volumes") or []:
                if isinstance(vol.get("image"), dict):
                    refs.add(str(vol["image"].get("reference") or ""))
        refs.discard("")
        return refs

    def _server_minor(self) -> int:
        try:
            minor = str((self.client.request("GET", "/version") or {}).get("minor", ""))
            return int("".join(ch for ch in minor if ch.isdigit()))
        except (ApiError, requests.RequestException, ValueError, AttributeError):
            return 33

    def _node_event(self, reason: str, message: str) -> None:
        node = {"kind": "Node", "apiVersion": "v1",
                "metadata": {"name": NODE_NAME, "uid": NODE_NAME}}
        self.client.event(node, reason, message, "Warning")

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.gone.set()
        for w in workers:
            w.join(timeout=60)
        if self.image_gc_thread is not None:  # a podman rmi must end before runroot goes
            self.image_gc_thread.join(timeout=130)
        self.cleanup_leftovers()
        if self.owns_net:
            self.net.remove()
        if not self.podman.runroot.startswith(self.podman.base):  # the short one under /tmp
            shutil.rmtree(self.podman.runroot, ignore_errors=True)


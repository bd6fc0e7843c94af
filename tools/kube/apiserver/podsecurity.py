"""Pod Security admission: the baseline and restricted checks of k8s.io/pod-security-admission.

Namespaces opt in with the labels ``pod-security.kubernetes.io/<mode>: privileged|baseline|
restricted`` and ``pod-security.kubernetes.io/<mode>-version: latest|v1.N`` (mode
``enforce``, ``warn`` or ``audit``). As in the real admission plugin:

* a Pod that violates the ``enforce`` level is refused with 403 Forbidden, ``pods "x" is
  forbidden: violates PodSecurity "restricted:latest": <reason> (<detail>), ...``;
* Deployments, Jobs and other pod controllers are never refused: their pods are, when the
  controller creates them (FailedCreate on the ReplicaSet / Job);
* ``warn`` adds ``would violate PodSecurity "<level>:<version>": ...`` Warning headers (to
  pods and pod controllers); ``audit`` only writes an audit annotation, which the stand-in
  logs (it keeps no audit log);
* bad label values are refused on the namespace (422) and treated as ``restricted``;
* setting a stricter ``enforce`` on a namespace warns about existing pods that violate it.

Checks, messages and their order follow the library's sources (one function per
``check_*.go``, run in file-name order: baseline checks first, then restricted ones).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Result = tuple[str, str] | None  # (forbidden reason, detail) or allowed
Check = Callable[[Obj, Obj], Result]

PREFIX = "pod-security.kubernetes.io/"
LEVELS = ("privileged", "baseline", "restricted")
LATEST_MINOR = 33  # the stand-in answers as v1.33.0
POD_CONTROLLERS = {"replicasets", "deployments", "statefulsets", "daemonsets", "jobs",
                   "cronjobs", "replicationcontrollers", "podtemplates"}


# -- helpers ---------------------------------------------------------------------------
def _join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def _plural(one: str, many: str, n: int) -> str:
    return one if n == 1 else many


def _containers(spec: Obj) -> Iterator[Obj]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _sc(c: Obj) -> Obj:
    return c.get("securityContext") or {}


def _psc(spec: Obj) -> Obj:
    return spec.get("securityContext") or {}


def _containers_phrase(names: list[str]) -> str:
    return f"{_plural('container', 'containers', len(names))} {_join_quote(names)}"


def _setters(pod_bad: bool, names: list[str]) -> str:
    parts = (["pod"] if pod_bad else []) + ([_containers_phrase(names)] if names else [])
    return " and ".join(parts)


# -- baseline checks -------------------------------------------------------------------
def app_armor_profile(meta: Obj, spec: Obj) -> Result:
    ok_types = ("RuntimeDefault", "Localhost")
    values: set[str] = set()
    pod_bad = False
    prof = _psc(spec).get("appArmorProfile")
    if prof is not None and prof.get("type") not in ok_types:
        pod_bad = True
        values.add(str(prof.get("type")))
    bad = []
    for c in _containers(spec):
        prof = _sc(c).get("appArmorProfile")
        if prof is not None and prof.get("type") not in ok_types:
            bad.append(c["name"])
            values.add(str(prof.get("type")))
    annotations = sorted(
        f'{k}="{v}"' for k, v in (meta.get("annotations") or {}).items()
        if k.startswith("container.apparmor.security.beta.kubernetes.io/") and v and
        v != "runtime/default" and not v.startswith("localhost/"))
    who = [w for w in [_setters(pod_bad, bad)] if w]
    listed = sorted(values) + annotations
    if annotations:
        who.append(_plural("annotation", "annotations", len(annotations)))
    if not who:
        return None
    return (_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", len(listed)),
            f"{' and '.join(who)} must not set AppArmor profile type to {_join_quote(listed)}")


def host_namespaces(meta: Obj, spec: Obj) -> Result:
    used = [k for k in ("hostIPC", "hostNetwork", "hostPID") if spec.get(k)]
    return ("host namespaces", ", ".join(used)) if used else None


def host_ports(meta: Obj, spec: Obj) -> Result:
    bad, ports = [], set()
    for c in _containers(spec):
        hp = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if hp:
            bad.append(c["name"])
            ports.update(hp)
    if not bad:
        return None
    return ("hostPort", f"{_containers_phrase(bad)} {_plural('uses', 'use', len(bad))} "
                        f"{_plural('hostPort', 'hostPorts', len(ports))} "
                        f"{', '.join(sorted(ports))}")


def privileged(meta: Obj, spec: Obj) -> Result:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("privileged")]
    return ("privileged", f"{_containers_phrase(bad)} must not set "
                          "securityContext.privileged=true") if bad else None


def proc_mount(meta: Obj, spec: Obj) -> Result:
    bad, kinds = [], set()
    for c in _containers(spec):
        pm = _sc(c).get("procMount")
        if pm is not None and pm != "Default":
            bad.append(c["name"])
            kinds.add(str(pm))
    if not bad:
        return None
    return ("procMount", f"{_containers_phrase(bad)} must not set securityContext.procMount "
                         f"to {_join_quote(sorted(kinds))}")


def se_linux_options(meta: Obj, spec: Obj) -> Result:
    allowed = ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
    bad_types: set[str] = set()
    flags = {"user": False, "role": False}

    def valid(opts: Obj) -> bool:
        ok = True
        if (opts.get("type") or "") not in allowed:
            ok = False
            bad_types.add(opts["type"])
        for key in ("user", "role"):
            if opts.get(key):
                ok = False
                flags[key] = True
        return ok

    pod_opts = _psc(spec).get("seLinuxOptions")
    pod_bad = pod_opts is not None and not valid(pod_opts)
    bad = [c["name"] for c in _containers(spec)
           if _sc(c).get("seLinuxOptions") is not None and not valid(_sc(c)["seLinuxOptions"])]
    if not pod_bad and not bad:
        return None
    data = []
    if bad_types:
        data.append(f"{_plural('type', 'types', len(bad_types))} "
                    f"{_join_quote(sorted(bad_types))}")
    data += [f"{k} may not be set" for k in ("user", "role") if flags[k]]
    return ("seLinuxOptions", f"{_setters(pod_bad, bad)} set forbidden "
                              f"securityContext.seLinuxOptions: {'; '.join(data)}")


SAFE_SYSCTLS = {0: {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                    "net.ipv4.ip_unprivileged_port_start"},
                27: {"net.ipv4.ip_local_reserved_ports"},
                29: {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                     "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}}


def sysctls_for(minor: int) -> Check:
    allowed = set().union(*(v for k, v in SAFE_SYSCTLS.items() if k <= minor))

    def sysctls(meta: Obj, spec: Obj) -> Result:
        bad = [s.get("name", "") for s in _psc(spec).get("sysctls") or []
               if s.get("name") not in allowed]
        return ("forbidden sysctls", ", ".join(bad)) if bad else None
    return sysctls


# baseline checks that restricted replaces with stricter ones ("Overlap")
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def capabilities_baseline(meta: Obj, spec: Obj) -> Result:
    bad, caps = [], set()
    for c in _containers(spec):
        extra = [str(x) for x in (_sc(c).get("capabilities") or {}).get("add") or []
                 if x not in BASELINE_CAPS]
        if extra:
            bad.append(c["name"])
            caps.update(extra)
    if not bad:
        return None
    return ("non-default capabilities", f"{_containers_phrase(bad)} must not include "
                                        f"{_join_quote(sorted(caps))} in "
                                        "securityContext.capabilities.add")


def host_path_volumes(meta: Obj, spec: Obj) -> Result:
    bad = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    return ("hostPath volumes", f"{_plural('volume', 'volumes', len(bad))} "
                                f"{_join_quote(bad)}") if bad else None


def _seccomp_ok(profile: Obj) -> bool:
    return profile.get("type") in ("RuntimeDefault", "Localhost")


def seccomp_baseline(meta: Obj, spec: Obj) -> Result:
    values: set[str] = set()
    prof = _psc(spec).get("seccompProfile")
    pod_bad = prof is not None and not _seccomp_ok(prof)
    if pod_bad:
        values.add(str(prof.get("type")))  # type: ignore[union-attr]
    bad = []
    for c in _containers(spec):
        prof = _sc(c).get("seccompProfile")
        if prof is not None and not _seccomp_ok(prof):
            bad.append(c["name"])
            values.add(str(prof.get("type")))
    if not pod_bad and not bad:
        return None
    return ("seccompProfile", f"{_setters(pod_bad, bad)} must not set "
                              f"securityContext.seccompProfile.type to "
                              f"{_join_quote(sorted(values))}")


# -- restricted checks -----------------------------------------------------------------
def allow_privilege_escalation(meta: Obj, spec: Obj) -> Result:
    bad = [c["name"] for c in _containers(spec)
           if _sc(c).get("allowPrivilegeEscalation") is not False]
    return ("allowPrivilegeEscalation != false",
            f"{_containers_phrase(bad)} must set "
            "securityContext.allowPrivilegeEscalation=false") if bad else None


def capabilities_restricted(meta: Obj, spec: Obj) -> Result:
    missing, adding, caps = [], [], set()
    for c in _containers(spec):
        cap = _sc(c).get("capabilities")
        if cap is None:
            missing.append(c["name"])
            continue
        if "ALL" not in (cap.get("drop") or []):
            missing.append(c["name"])
        extra = [str(x) for x in cap.get("add") or [] if x != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c["name"])
            caps.update(extra)
    details = []
    if missing:
        details.append(f'{_containers_phrase(missing)} must set '
                       'securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_containers_phrase(adding)} must not include "
                       f"{_join_quote(sorted(caps))} in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


# `image`: allowed since 1.33 at every policy version (kubernetes/kubernetes#130394)
RESTRICTED_VOLUME_KINDS = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                           "persistentVolumeClaim", "projected", "secret")


def restricted_volumes(meta: Obj, spec: Obj) -> Result:
    bad = sorted({v["name"] for v in spec.get("volumes") or []
                  if not any(k in v for k in RESTRICTED_VOLUME_KINDS)})
    if not bad:
        return None
    # Go's %q of a []string: ["a" "b"]
    return ("restricted volume types",
            f"volumes [{' '.join(chr(34) + n + chr(34) for n in bad)}] have restricted types")


def run_as_non_root(meta: Obj, spec: Obj) -> Result:
    pod_value = _psc(spec).get("runAsNonRoot")
    pod_bad = pod_value is False
    explicit_bad, implicit_bad = [], []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if not value:
                explicit_bad.append(c["name"])
        elif pod_value is not True:
            implicit_bad.append(c["name"])
    if pod_bad or explicit_bad:
        return ("runAsNonRoot != true", f"{_setters(pod_bad, explicit_bad)} must not set "
                                        "securityContext.runAsNonRoot=false")
    if implicit_bad:
        return ("runAsNonRoot != true", f"pod or {_containers_phrase(implicit_bad)} must set "
                                        "securityContext.runAsNonRoot=true")
    return None


def run_as_user(meta: Obj, spec: Obj) -> Result:
    pod_bad = _psc(spec).get("runAsUser") == 0
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("runAsUser") == 0]
    if not pod_bad and not bad:
        return None
    return ("runAsUser=0", f"{_setters(pod_bad, bad)} must not set runAsUser=0")


def seccomp_restricted(meta: Obj, spec: Obj) -> Result:
    values: set[str] = set()
    prof = _psc(spec).get("seccompProfile")
    pod_set = prof is not None and _seccomp_ok(prof)
    pod_bad = prof is not None and not pod_set
    if pod_bad:
        values.add(str(prof.get("type")))  # type: ignore[union-attr]
    explicit_bad, implicit_bad = [], []
    for c in _containers(spec):
        cprof = _sc(c).get("seccompProfile")
        if cprof is not None:
            if not _seccomp_ok(cprof):
                explicit_bad.append(c["name"])
                values.add(str(cprof.get("type")))
        elif not pod_set:
            implicit_bad.append(c["name"])
    if pod_bad or explicit_bad:
        return ("seccompProfile", f"{_setters(pod_bad, explicit_bad)} must not set "
                                  "securityContext.seccompProfile.type to "
                                  f"{_join_quote(sorted(values))}")
    if implicit_bad:
        return ("seccompProfile", f"pod or {_containers_phrase(implicit_bad)} must set "
                                  'securityContext.seccompProfile.type to "RuntimeDefault" '
                                  'or "Localhost"')
    return None


def checks(level: str, minor: int) -> list[Check]:
    """The checks of a level at a policy version, in the library's evaluation order."""
    if level == "privileged":
        return []
    out: list[Check] = [app_armor_profile, host_namespaces, host_ports, privileged, proc_mount,
                        se_linux_options, sysctls_for(minor)]
    if level == "baseline":
        return [*out, capabilities_baseline, host_path_volumes, seccomp_baseline]
    restricted: list[tuple[int, Check]] = [
        (8, allow_privilege_escalation), (22, capabilities_restricted), (0, restricted_volumes),
        (0, run_as_non_root), (23, run_as_user), (19, seccomp_restricted)]
    return [*out, *(check for since, check in restricted if minor >= since)]


# -- policy from namespace labels ------------------------------------------------------
class Policy:
    """Level and version per mode (enforce, warn, audit) from a namespace's labels."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.errors: list[tuple[str, str, str]] = []  # (label, value, message)
        self.level: dict[str, str] = {}
        self.version: dict[str, str] = {}
        for mode in ("enforce", "warn", "audit"):
            level = labels.get(PREFIX + mode, "privileged")
            if level not in LEVELS:
                self.errors.append((PREFIX + mode, level,
                                    "must be one of privileged, baseline, restricted"))
                level = "restricted" if mode == "enforce" else "privileged"  # fail closed/open
            version = labels.get(f"{PREFIX}{mode}-version", "latest")
            if version != "latest" and not re.fullmatch(r"v1\.(0|[1-9][0-9]*)", version):
                self.errors.append((f"{PREFIX}{mode}-version", version,
                                    'must be "latest" or "v1.x"'))
                version = "latest"
            self.level[mode], self.version[mode] = level, version

    def name(self, mode: str) -> str:
        return f"{self.level[mode]}:{self.version[mode]}"

    def evaluate(self, mode: str, meta: Obj, spec: Obj) -> str:
        """The aggregated ForbiddenDetail, empty when the pod is allowed."""
        version = self.version[mode]
        minor = LATEST_MINOR if version == "latest" else min(int(version[3:]), LATEST_MINOR)
        parts = []
        for check in checks(self.level[mode], minor):
            result = check(meta, spec)
            if result:
                reason, detail = result
                parts.append(f"{reason} ({detail})" if detail else reason)
        return ", ".join(parts)


def pod_template(kind: str, obj: Obj) -> tuple[Obj, Obj] | None:
    """(metadata, spec) of the pod a pod or pod controller describes."""
    spec = obj.get("spec") or {}
    if kind == "pods":
        return obj.get("metadata") or {}, spec
    if kind == "podtemplates":
        tmpl = obj.get("template") or {}
    elif kind == "cronjobs":
        tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    else:
        tmpl = spec.get("template") or {}
    if not tmpl:
        return None
    return tmpl.get("metadata") or {}, tmpl.get("spec") or {}


def _significant_pod_update(new: Obj, old: Obj) -> bool:
    """Only an image (or seccomp annotation) change re-evaluates an existing pod."""
    def images(o: Obj) -> list[Any]:
        s = o.get("spec") or {}
        return [[c.get("image") for c in s.get(k) or []] for k in ("containers",
                                                                    "initContainers")]

    def seccomp(o: Obj) -> dict[str, str]:
        return {k: v for k, v in ((o.get("metadata") or {}).get("annotations") or {}).items()
                if "seccomp" in k}
    return images(new) != images(old) or seccomp(new) != seccomp(old)


def admit(kind: str, obj: Obj, old: Obj | None, namespace: Obj | None,
          warnings: list[str]) -> None:
    """Raise the 403 of an enforced violation; add warn-mode warnings to ``warnings``."""
    if (kind not in POD_CONTROLLERS and kind != "pods") or namespace is None:
        return
    policy = Policy((namespace.get("metadata") or {}).get("labels") or {})
    if all(policy.level[m] == "privileged" for m in ("enforce", "warn", "audit")) \
            and not policy.errors:
        return
    if kind == "pods" and old is not None and not _significant_pod_update(obj, old):
        return
    template = pod_template(kind, obj)
    if template is None:
        return
    meta, spec = template
    name = (obj.get("metadata") or {}).get("name", "")
    if kind == "pods":
        detail = policy.evaluate("enforce", meta, spec)
        if detail:
            raise ApiError(403, "Forbidden",
                           f'pods "{name}" is forbidden: violates PodSecurity '
                           f'"{policy.name("enforce")}": {detail}',
                           {"name": name, "kind": "pods"})
    audit = policy.evaluate("audit", meta, spec)
    if audit:
        log.info("audit annotation pod-security.kubernetes.io/audit-violations on %s %s/%s: "
                 "would violate PodSecurity %r: %s", kind,
                 (obj.get("metadata") or {}).get("namespace", ""), name, policy.name("audit"),
                 audit)
    warn = policy.evaluate("warn", meta, spec)
    if warn:
        warnings.append(f'would violate PodSecurity "{policy.name("warn")}": {warn}')


def admit_namespace(ns: Obj, old: Obj | None, pods: list[Obj], warnings: list[str]) -> None:
    """Refuse bad PodSecurity labels (422); warn about pods a stricter enforce would refuse."""
    name = (ns.get("metadata") or {}).get("name", "")
    policy = Policy((ns.get("metadata") or {}).get("labels") or {})
    if policy.errors:
        causes = [{"reason": "FieldValueInvalid", "field": f"metadata.labels[{label}]",
                   "message": f'Invalid value: "{value}": {msg}'}
                  for label, value, msg in policy.errors]
        parts = [f"{c['field']}: {c['message']}" for c in causes]
        text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        raise ApiError(422, "Invalid", f'Namespace "{name}" is invalid: {text}',
                       {"name": name, "kind": "Namespace", "causes": causes})
    if old is None:
        return
    before = Policy((old.get("metadata") or {}).get("labels") or {})
    if policy.name("enforce") == before.name("enforce") or \
            policy.level["enforce"] == "privileged":
        return
    if policy.version["enforce"] == before.version["enforce"] and \
            LEVELS.index(policy.level["enforce"]) < LEVELS.index(before.level["enforce"]):
        return
    by_reason: dict[str, list[str]] = {}
    for pod in pods:
        if policy.evaluate("enforce", pod.get("metadata") or {}, pod.get("spec") or {}):
            reasons = ", ".join(_reasons(policy, pod))
            by_reason.setdefault(reasons, []).append(pod["metadata"]["name"])
    if not by_reason:
        return
    warnings.append(f'existing pods in namespace "{name}" violate the new PodSecurity '
                    f'enforce level "{policy.name("enforce")}"')
    lines = []
    for reasons, names in by_reason.items():
        first, others = min(names), len(names) - 1
        who = first if others == 0 else \
            f"{first} (and {others} other {_plural('pod', 'pods', others)})"
        lines.append(f"{who}: {reasons}")
    warnings.extend(sorted(lines))


def _reasons(policy: Policy, pod: Obj) -> list[str]:
    version = policy.version["enforce"]
    minor = LATEST_MINOR if version == "latest" else min(int(version[3:]), LATEST_MINOR)
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return [r[0] for r in (c(meta, spec) for c in checks(policy.level["enforce"], minor)) if r]

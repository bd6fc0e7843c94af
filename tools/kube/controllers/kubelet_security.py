"""What a kubelet enforces from a pod's security contexts, as podman flags and volume modes.

Follows the kubelet and containerd (read in their sources, not guessed):

* ``verifyRunAsNonRoot`` (pkg/kubelet/kuberuntime/security_context_others.go): the
  effective ``runAsUser`` decides first; otherwise the image's configured user, split at
  ``:`` and read as a number, or refused when it is a name (the kubelet cannot verify
  it) or empty/0 (root). A refusal is ``CreateContainerConfigError`` with the kubelet's
  message, e.g. ``container has runAsNonRoot and image will run as root (pod:
  "web_team(uid)", container: server)``.
* Effective security context (pkg/securitycontext): the container's ``runAsUser``,
  ``runAsGroup``, ``runAsNonRoot``, ``seccompProfile``, ``seLinuxOptions`` override the
  pod's; ``capabilities``, ``privileged``, ``readOnlyRootFilesystem``,
  ``allowPrivilegeEscalation`` and ``procMount`` exist on the container only.
* Capabilities as containerd sets them: its default set (the 14 of the Pod Security
  baseline list), ``add: [ALL]`` / ``drop: [ALL]`` first, then single adds, then single
  drops. podman's own default set is smaller, so the final set is passed explicitly.
* seccomp: no profile means ``Unconfined`` (a kubelet without ``--seccomp-default``);
  ``RuntimeDefault`` is the runtime's profile (podman's); ``Localhost`` reads
  ``STATE_DIR/seccomp/<localhostProfile>`` (the kubelet's ``/var/lib/kubelet/seccomp``).
* ``allowPrivilegeEscalation: false`` sets no_new_privs; unset leaves it off.
* ``fsGroup`` (pkg/volume/volume_linux.go ``SetVolumeOwnership``): the volume's files
  get group ``fsGroup``, group read (+write unless read-only) and directories setgid; the
  group is added to the container's supplementary groups.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

Obj = dict[str, Any]

# containerd's default capability set (pkg/oci/spec.go populateDefaultUnixSpec)
DEFAULT_CAPS = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                "SYS_CHROOT")
ALL_CAPS = (*DEFAULT_CAPS, "AUDIT_CONTROL", "AUDIT_READ", "BLOCK_SUSPEND", "BPF",
            "CHECKPOINT_RESTORE", "DAC_READ_SEARCH", "IPC_LOCK", "IPC_OWNER", "LEASE",
            "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "NET_ADMIN", "NET_BROADCAST",
            "PERFMON", "SYS_ADMIN", "SYS_BOOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
            "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG",
            "WAKE_ALARM")
# volume kinds whose ownership the kubelet sets to fsGroup (hostPath and nfs-like: not)
FS_GROUP_VOLUMES = ("emptyDir", "secret", "configMap", "downwardAPI", "projected",
                    "persistentVolumeClaim", "ephemeral")
READ_ONLY_VOLUMES = ("secret", "configMap", "downwardAPI", "projected")


class ConfigError(Exception):
    """The kubelet refuses to create the container: ``CreateContainerConfigError``."""


class CreateError(Exception):
    """The runtime cannot create the container: ``CreateContainerError``."""


def pod_name(pod: Obj) -> str:
    """The kubelet's ``format.Pod``: ``name_namespace(uid)``."""
    md = pod.get("metadata") or {}
    return f"{md.get('name')}_{md.get('namespace') or 'default'}({md.get('uid', '')})"


def effective(pod: Obj, container: Obj) -> Obj:
    """The container's security context with the pod's values it inherits."""
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    out = {k: psc[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile",
                               "seLinuxOptions", "appArmorProfile") if psc.get(k) is not None}
    out.update({k: v for k, v in (container.get("securityContext") or {}).items()
                if v is not None})
    return out


def image_user(config_user: str) -> tuple[int | None, str]:
    """(uid, username) from an image's ``User`` the way containerd reports it to the kubelet.

    Empty -> uid 0 (the kubelet treats "no user" as root); ``1000:1000`` -> 1000;
    ``app`` or ``app:grp`` -> username ``app``.
    """
    user = (config_user or "").split(":", 1)[0]
    if not user:
        return 0, ""
    try:
        return int(user), ""
    except ValueError:
        return None, user


def verify_run_as_non_root(pod: Obj, container: Obj, config_user: str) -> None:
    """Raise :class:`ConfigError` where the kubelet's ``verifyRunAsNonRoot`` refuses."""
    sc = effective(pod, container)
    if not sc.get("runAsNonRoot"):
        return
    where = f'(pod: "{pod_name(pod)}", container: {container.get("name")})'
    if sc.get("runAsUser") is not None:
        if int(sc["runAsUser"]) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    uid, username = image_user(config_user)
    if uid is None and username:
        raise ConfigError("container has runAsNonRoot and image has non-numeric user "
                          f"({username}), cannot verify user is non-root {where}")
    if uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")


def capabilities(sc: Obj) -> list[str]:
    """The final capability set, computed as containerd does from add/drop."""
    caps = sc.get("capabilities") or {}
    add = [str(c).upper() for c in caps.get("add") or []]
    drop = [str(c).upper() for c in caps.get("drop") or []]
    have = list(DEFAULT_CAPS)
    if "ALL" in add:
        have = list(ALL_CAPS)
    if "ALL" in drop:
        have = []
    for c in add:
        if c != "ALL" and c not in have:
            have.append(c)
    return [c for c in have if c not in drop]


def check(pod: Obj, container: Obj, config_user: str, state_dir: str) -> None:
    """Raise what the kubelet (``ConfigError``) or the runtime (``CreateError``) refuses."""
    verify_run_as_non_root(pod, container, config_user)
    profile = effective(pod, container).get("seccompProfile") or {}
    if profile.get("type") == "Localhost":
        path = _localhost_profile(profile, state_dir)
        if not os.path.isfile(path):
            raise CreateError(f'failed to create containerd container: cannot load seccomp '
                              f'profile "{path}": open {path}: no such file or directory')


def podman_args(pod: Obj, container: Obj, state_dir: str,
                config_user: Callable[[], str]) -> list[str]:
    """podman flags for the container's user, groups, capabilities and hardening.

    ``config_user`` returns the image's ``User``; it is only asked for when
    ``runAsGroup`` comes without ``runAsUser``.
    """
    sc = effective(pod, container)
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    args: list[str] = []
    uid, gid = sc.get("runAsUser"), sc.get("runAsGroup")
    if uid is not None or gid is not None:
        user = str(uid) if uid is not None else (config_user().split(":", 1)[0] or "0")
        args += ["--user", user if gid is None else f"{user}:{gid}"]
    groups = [*(psc.get("supplementalGroups") or []),
              *([psc["fsGroup"]] if psc.get("fsGroup") is not None else [])]
    for g in dict.fromkeys(str(g) for g in groups):
        args += ["--group-add", g]
    if sc.get("privileged"):
        args.append("--privileged")
    else:
        args += ["--cap-drop", "all"]
        caps = capabilities(sc)
        if caps:
            args += ["--cap-add", ",".join(caps)]
    if sc.get("readOnlyRootFilesystem"):
        # Kubernetes mounts no tmpfs on /tmp or /run: only volumes stay writable
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("procMount") == "Unmasked":
        args += ["--security-opt", "unmask=ALL"]
    args += _seccomp(sc.get("seccompProfile") or {}, state_dir)
    return args


def _seccomp(profile: Obj, state_dir: str) -> list[str]:
    kind = profile.get("type") or "Unconfined"
    if kind == "RuntimeDefault":
        return []
    if kind == "Localhost":
        return ["--security-opt", f"seccomp={_localhost_profile(profile, state_dir)}"]
    return ["--security-opt", "seccomp=unconfined"]


def _localhost_profile(profile: Obj, state_dir: str) -> str:
    """Where the kubelet's ``/var/lib/kubelet/seccomp/<localhostProfile>`` is here."""
    return os.path.join(state_dir, "seccomp", profile.get("localhostProfile") or "")


def apply_fs_group(pod: Obj, host_paths: dict[str, str]) -> None:
    """Give the pod's volumes to its ``fsGroup`` like the kubelet's SetVolumeOwnership."""
    spec = pod.get("spec") or {}
    gid = (spec.get("securityContext") or {}).get("fsGroup")
    if gid is None:
        return
    for vol in spec.get("volumes") or []:
        kind = next((k for k in FS_GROUP_VOLUMES if k in vol), None)
        path = host_paths.get(vol.get("name", ""))
        if kind is None or not path or not os.path.exists(path):
            continue
        _own(path, int(gid), read_only=kind in READ_ONLY_VOLUMES)


def _own(root: str, gid: int, read_only: bool) -> None:
    mask = 0o440 if read_only else 0o660
    for dirpath, _dirs, filenames in os.walk(root):
        for name in [None, *filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                continue
            os.chown(path, -1, gid)
            extra = mask | (stat.S_ISGID | 0o110 if name is None else 0)
            os.chmod(path, stat.S_IMODE(info.st_mode) | extra)

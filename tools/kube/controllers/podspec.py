"""Turning a pod spec into host things: environment variables and bind-mounted volumes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
from typing import Any

from .client import KubeClient, Obj


class MountError(Exception):
    """A volume or an env source cannot be materialised yet (missing secret, ...)."""


def _get_source(client: KubeClient, kind: str, ns: str, name: str, optional: bool) -> Obj | None:
    obj = client.get(kind, ns, name)
    if obj is None and not optional:
        raise MountError(f'{kind[:-1]} "{name}" not found')
    return obj


def _data_of(obj: Obj | None) -> dict[str, bytes]:
    if not obj:
        return {}
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret" or "type" in obj:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v or "")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v or "")
    return out


def field_value(pod: Obj, path: str, pod_ip: str = "", host_ip: str = "") -> str:
    md = pod.get("metadata", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
        "metadata.uid": md.get("uid"), "spec.nodeName": "harness-node",
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": pod_ip, "status.hostIP": host_ip, "status.podIPs": pod_ip,
        "status.hostIPs": host_ip,
    }
    if path in ("metadata.labels", "metadata.annotations"):
        return "\n".join(f'{k}="{v}"' for k, v in (md.get(path.split(".")[1]) or {}).items())
    return str(simple.get(path) or "")


def expand(value: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion (third_party/forked/golang/expansion).

    ``$(NAME)`` becomes the value, or stays ``$(NAME)`` when NAME is unknown; ``$$``
    is a literal ``$``; any other ``$`` is kept as it is.
    """
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != "$" or i + 1 == n:
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(" and ")" in value[i + 2:]:
            end = value.index(")", i + 2)
            name = value[i + 2:end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def resolve_env(client: KubeClient, pod: Obj, container: Obj, pod_ip: str = "",
                host_ip: str = "") -> dict[str, str]:
    ns = pod["metadata"].get("namespace") or "default"
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            obj = _get_source(client, "configmaps", ns, ref["name"], ref.get("optional", False))
        elif "secretRef" in src:
            ref = src["secretRef"]
            obj = _get_source(client, "secrets", ns, ref["name"], ref.get("optional", False))
        else:
            continue
        for k, v in _data_of(obj).items():
            env[prefix + k] = v.decode(errors="replace")
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = expand(str(item.get("value") or ""), env)
            continue
        vf = item.get("valueFrom") or {}
        if not vf:
            env[name] = ""
        elif "secretKeyRef" in vf or "configMapKeyRef" in vf:
            is_secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef" if is_secret else "configMapKeyRef"]
            optional = ref.get("optional", False)
            obj = _get_source(client, "secrets" if is_secret else "configmaps", ns, ref["name"],
                              optional)
            data = _data_of(obj)
            if ref["key"] not in data:
                if optional:
                    continue
                raise MountError(f'couldn\'t find key {ref["key"]} in {ref["name"]}')
            env[name] = data[ref["key"]].decode(errors="replace")
        elif "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"].get("fieldPath", ""), pod_ip, host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = "1"
    return env


def _write_files(target: str, data: dict[str, bytes], items: list[Obj] | None,
                 default_mode: int | None) -> None:
    os.makedirs(target, exist_ok=True)
    mode = 0o644 if default_mode is None else default_mode
    selected: list[tuple[str, str, int]] = []
    if items:
        for it in items:
            if it["key"] not in data:
                raise MountError(f'key {it["key"]} not found')
            selected.append((it["key"], it.get("path") or it["key"], it.get("mode", mode)))
    else:
        selected = [(k, k, mode) for k in data]
    for key, rel, m in selected:
        path = os.path.join(target, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data[key])
        os.chmod(path, m)


def prepare_volumes(client: KubeClient, pod: Obj, pod_dir: str, state_dir: str) -> dict[str, str]:
    """Materialise the pod's volumes; returns volume name -> host path."""
    ns = pod["metadata"].get("namespace") or "default"
    out: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol["name"]
        target = os.path.join(pod_dir, "volumes", name)
        if "emptyDir" in vol:
            os.makedirs(target, exist_ok=True)
            os.chmod(target, 0o777)
        elif "secret" in vol or "configMap" in vol:
            is_secret = "secret" in vol
            src = vol["secret" if is_secret else "configMap"]
            ref_name = src.get("secretName") if is_secret else src.get("name")
            obj = _get_source(client, "secrets" if is_secret else "configmaps", ns,
                              ref_name or "", src.get("optional", False))
            if os.path.isdir(target):
                shutil.rmtree(target)
            _write_files(target, _data_of(obj), src.get("items"), src.get("defaultMode"))
        elif "projected" in vol:
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.makedirs(target)
            proj = vol["projected"]
            for source in proj.get("sources") or []:
                if "secret" in source or "configMap" in source:
                    is_secret = "secret" in source
                    src = source["secret" if is_secret else "configMap"]
                    obj = _get_source(client, "secrets" if is_secret else "configmaps", ns,
                                      src.get("name", ""), src.get("optional", False))
                    _write_files(target, _data_of(obj), src.get("items"),
                                 proj.get("defaultMode"))
                elif "downwardAPI" in source:
                    _write_downward(target, pod, source["downwardAPI"].get("items") or [])
                elif "serviceAccountToken" in source:
                    path = os.path.join(target, source["serviceAccountToken"].get("path", "token"))
                    with open(path, "w", encoding="utf-8") as fh:
                        fh.write("harness-service-account-token")
        elif "downwardAPI" in vol:
            os.makedirs(target, exist_ok=True)
            _write_downward(target, pod, vol["downwardAPI"].get("items") or [])
        elif "persistentVolumeClaim" in vol:
            target = os.path.join(state_dir, "pvc", ns, vol["persistentVolumeClaim"]["claimName"])
            if not os.path.isdir(target):
                os.makedirs(target)
                os.chmod(target, 0o777)  # like kind's local-path provisioner
        elif "hostPath" in vol:
            target = vol["hostPath"]["path"]
            htype = vol["hostPath"].get("type", "")
            if htype == "DirectoryOrCreate":
                os.makedirs(target, exist_ok=True)
            elif htype == "FileOrCreate" and not os.path.exists(target):
                open(target, "a").close()
        else:
            os.makedirs(target, exist_ok=True)  # unsupported kinds: an empty dir
        out[name] = target
    return out


def _write_downward(target: str, pod: Obj, items: list[Obj]) -> None:
    for it in items:
        value = field_value(pod, (it.get("fieldRef") or {}).get("fieldPath", ""))
        path = os.path.join(target, it["path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(value)


def mounts(container: Obj, volumes: dict[str, str],
           read_only: set[str] | None = None) -> list[tuple[str, str, bool]]:
    """(host path, container path, read-only) for each volumeMount; `read_only` volumes
    (image volumes) are read-only whatever the mount says."""
    out = []
    for vm in container.get("volumeMounts") or []:
        host = volumes.get(vm["name"])
        if host is None:
            raise MountError(f'volume "{vm["name"]}" not found')
        if vm.get("subPath"):
            host = os.path.join(host, vm["subPath"])
            if not os.path.exists(host):
                os.makedirs(host, exist_ok=True)
        out.append((host, vm["mountPath"],
                    bool(vm.get("readOnly")) or vm["name"] in (read_only or set())))
    return out


def docker_configs(client: KubeClient, pod: Obj) -> list[dict[str, Any]]:
    ns = pod["metadata"].get("namespace") or "default"
    out = []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        sec = client.get("secrets", ns, ref.get("name", ""))
        if not sec:
            continue
        data = _data_of(sec)
        for key in (".dockerconfigjson", ".dockercfg"):
            if key in data:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(data[key]))
    return out

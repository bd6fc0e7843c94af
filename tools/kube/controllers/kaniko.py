"""Kaniko shim: runs where the node would run a Kaniko executor container.

``python -m tools.kube.controllers.kaniko [kaniko flags]`` — parses the
executor's flags, reads ``/kaniko/.docker/config.json`` (through the pod's
mounts: ``KANIKO_SHIM_MOUNTS`` maps container paths to host paths), checks
push permissions like Kaniko does, builds with ``buildah bud --isolation
chroot`` and pushes to every ``--destination``. Log lines and exit codes
imitate Kaniko.

Every build starts from empty storage (a directory under
``KANIKO_SHIM_STATE_DIR``, removed afterwards), so the base image is pulled
and unpacked at every build, as a Kaniko pod does: its container holds no
image store, and a COPY needs the unpacked root file system
(``RequiresUnpackedFS``; the agent runs Kaniko with ``--cache=false``). A
store shared across builds would make the shim quicker than the Kaniko it
stands for, and comparisons against it (bench/time_to_prediction) unfair.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from .runtime import ULIMITS, registry_host, write_authfile

PUSH_ERROR = ("error checking push permissions -- make sure you entered the correct tag name, "
              "and that you are authenticated correctly, and try again")

VALUE_FLAGS = {
    "context", "c", "dockerfile", "f", "destination", "d", "build-arg",
    "insecure-registry", "skip-tls-verify-registry", "registry-certificate", "cache-repo",
    "cache-dir", "cache-ttl", "target", "tar-path", "digest-file", "image-name-with-digest-file",
    "image-name-tag-with-digest-file", "label", "snapshot-mode", "verbosity", "v",
    "log-format", "compression", "compression-level", "custom-platform", "registry-mirror",
    "oci-layout-path", "ignore-path", "kaniko-dir", "push-retry", "image-fs-extract-retry",
    "context-sub-path", "git", "registry-map", "credential-helpers", "image-download-retry",
    "registry-client-cert", "push-ignore-immutable-tag-errors",
}
BOOL_FLAGS = {"insecure", "skip-tls-verify", "insecure-pull", "skip-tls-verify-pull", "no-push",
              "cache", "cleanup", "single-snapshot", "use-new-run", "reproducible",
              "force", "log-timestamp", "skip-unused-stages", "compressed-caching",
              "ignore-var-run", "cache-copy-layers", "cache-run-layers",
              "skip-push-permission-check"}

#: Repositories (without registry host) that publish a Kaniko executor. A mirror that keeps
#: the upstream path (pull-through caches: <registry>/<prefix>/osscontainertools/kaniko) is
#: known too; a renamed mirror must be declared in KUBE_STANDIN_KANIKO_IMAGES (comma-separated
#: repositories). Any other image, even one with "kaniko" in its name, is pulled like every
#: image: a look-alike that no registry holds fails with ErrImagePull, as on a real node.
KNOWN_EXECUTORS = (
    "osscontainertools/kaniko",   # ghcr.io: the maintained community fork (the default)
    "martizih/kaniko",            # docker.io: the same fork's Docker Hub images
    "kaniko-project/executor",    # gcr.io: upstream, archived in June 2025
    "chainguard/kaniko",          # cgr.dev: Chainguard's fork, images for its customers
)

_T0 = time.monotonic()


def _repository(image: str) -> str:
    """`host/path/name:tag@digest` -> `host/path/name`."""
    repo = image.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: -len(last)] + last.split(":", 1)[0]
    return repo


def is_executor(image: str) -> bool:
    """Whether `image` is a Kaniko executor image the stand-in runs through this shim."""
    repo = _repository(image)
    declared = {_repository(item.strip()) for item in
                os.environ.get("KUBE_STANDIN_KANIKO_IMAGES", "").split(",") if item.strip()}
    if repo in declared:
        return True
    return any(repo == known or repo.endswith("/" + known) for known in KNOWN_EXECUTORS)


def info(msg: str, level: str = "INFO") -> None:
    print(f"{level}[{int(time.monotonic() - _T0):04d}] {msg}", flush=True)


class KanikoError(Exception):
    pass


@dataclass
class Options:
    context: str = "dir:///workspace"
    dockerfile: str = "Dockerfile"
    destinations: list[str] = field(default_factory=list)
    build_args: list[str] = field(default_factory=list)
    insecure: bool = False
    insecure_pull: bool = False
    skip_tls: bool = False
    skip_tls_pull: bool = False
    insecure_registries: set[str] = field(default_factory=set)
    skip_tls_registries: set[str] = field(default_factory=set)
    certificates: dict[str, str] = field(default_factory=dict)
    no_push: bool = False
    target: str | None = None
    tar_path: str | None = None
    digest_file: str | None = None
    name_digest_file: str | None = None
    context_sub_path: str | None = None
    labels: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Options:
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            opts.ignored.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq:
            if name in VALUE_FLAGS and i < len(argv):
                value = argv[i]
                i += 1
            elif name in BOOL_FLAGS or i >= len(argv) or argv[i].startswith("-"):
                value = "true"
            else:
                value = argv[i]
                i += 1
        truthy = value.lower() not in ("false", "0")
        if name in ("context", "c"):
            opts.context = value
        elif name in ("dockerfile", "f"):
            opts.dockerfile = value
        elif name in ("destination", "d"):
            opts.destinations.append(value)
        elif name == "build-arg":
            opts.build_args.append(value)
        elif name == "insecure":
            opts.insecure = truthy
        elif name == "insecure-pull":
            opts.insecure_pull = truthy
        elif name == "skip-tls-verify":
            opts.skip_tls = truthy
        elif name == "skip-tls-verify-pull":
            opts.skip_tls_pull = truthy
        elif name == "insecure-registry":
            opts.insecure_registries.add(value)
        elif name == "skip-tls-verify-registry":
            opts.skip_tls_registries.add(value)
        elif name == "registry-certificate":
            host, _, path = value.partition("=")
            opts.certificates[host] = path
        elif name == "no-push":
            opts.no_push = truthy
        elif name == "target":
            opts.target = value
        elif name == "tar-path":
            opts.tar_path = value
        elif name == "digest-file":
            opts.digest_file = value
        elif name == "image-name-with-digest-file":
            opts.name_digest_file = value
        elif name == "context-sub-path":
            opts.context_sub_path = value
        elif name == "label":
            opts.labels.append(value)
        else:
            opts.ignored.append(name)
    return opts


class PathMap:
    """Container paths -> host paths through the pod's mounts.

    A path outside every mount lands in the container's private scratch root
    (``KANIKO_SHIM_ROOT``), never on the host's own file system.
    """

    def __init__(self, mounts: dict[str, str], scratch_root: str | None = None) -> None:
        self.mounts = sorted(mounts.items(), key=lambda kv: -len(kv[0]))
        self.scratch_root = scratch_root

    def mapped(self, path: str) -> str | None:
        for ctr, host in self.mounts:
            ctr_n = ctr.rstrip("/") or "/"
            if path == ctr_n or path.startswith(ctr_n.rstrip("/") + "/"):
                return host + path[len(ctr_n.rstrip("/")):]
        return None

    def host(self, path: str) -> str:
        found = self.mapped(path)
        if found is not None:
            return found
        root = self.scratch_root or tempfile.mkdtemp(prefix="kaniko-root-")
        self.scratch_root = root
        target = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        return target


# -- registry access ---------------------------------------------------------------------
def _tls_for(host: str, opts: Options, pmap: PathMap, tmp: str, pull: bool
             ) -> tuple[bool, str | None, bool]:
    """(verify, cert_dir, plain_http) for one registry host."""
    plain = host in opts.insecure_registries or (opts.insecure_pull if pull else opts.insecure)
    skip = host in opts.skip_tls_registries or (opts.skip_tls_pull if pull else opts.skip_tls)
    cert_dir = None
    if host in opts.certificates:
        src = pmap.host(opts.certificates[host])
        cert_dir = os.path.join(tmp, "certs", host.replace(":", "_"))
        os.makedirs(cert_dir, exist_ok=True)
        shutil.copyfile(src, os.path.join(cert_dir, "ca.crt"))
    elif pull and os.environ.get("KUBE_STANDIN_REGISTRY_CA", os.environ.get("HARNESS_CA_CERT")):
        # base-image pulls: trust the node's registry CA (the cluster's mirror config)
        ca = os.environ.get("KUBE_STANDIN_REGISTRY_CA") or os.environ["HARNESS_CA_CERT"]
        if os.path.exists(ca):
            cert_dir = os.path.join(tmp, "certs", "pull-" + host.replace(":", "_"))
            os.makedirs(cert_dir, exist_ok=True)
            shutil.copyfile(ca, os.path.join(cert_dir, "ca.crt"))
    return not (plain or skip), cert_dir, plain


def check_push(ref: str, auths: dict[str, Any], verify: bool | str, plain: bool) -> None:
    """Kaniko's push-permission check: start a blob upload, then cancel it.

    Like go-containerregistry's CheckPushPermission, the cancel is fire-and-forget: a
    registry slow to answer the DELETE (an fsync on a busy disk) must not fail the build.
    """
    host = registry_host(ref)
    repo = ref.split("/", 1)[1].split("@")[0].rsplit(":", 1)[0] if "/" in ref else ref
    scheme = "http" if plain else "https"
    entry = auths.get(host) or {}
    sess = requests.Session()
    sess.trust_env = False
    sess.verify = verify
    url = f"{scheme}://{host}/v2/{repo}/blobs/uploads/"
    try:
        headers: dict[str, str] = {}
        resp = sess.post(url, headers=headers, timeout=30)
        if resp.status_code == 401:
            challenge = resp.headers.get("WWW-Authenticate", "")
            if challenge.lower().startswith("basic") and entry.get("auth"):
                headers["Authorization"] = "Basic " + entry["auth"]
            elif challenge.lower().startswith("bearer"):
                params = dict(part.split("=", 1) for part in
                              challenge[7:].replace('"', "").split(",") if "=" in part)
                realm = params.pop("realm", "")
                params["scope"] = f"repository:{repo}:pull,push"
                tok_headers = {"Authorization": "Basic " + entry["auth"]} if entry.get(
                    "auth") else {}
                tok = sess.get(realm, params=params, headers=tok_headers, timeout=30)
                if tok.status_code == 200:
                    body = tok.json()
                    headers["Authorization"] = "Bearer " + (body.get("token") or
                                                            body.get("access_token", ""))
            if headers:
                resp = sess.post(url, headers=headers, timeout=30)
        if resp.status_code in (401, 403):
            code = "UNAUTHORIZED" if resp.status_code == 401 else "DENIED"
            try:
                detail = resp.json()["errors"][0].get("message", "")
            except (ValueError, KeyError, IndexError, TypeError):
                detail = resp.reason
            raise KanikoError(f'{PUSH_ERROR}: checking push permission for "{ref}": POST '
                              f"{url}: {code}: {detail}")
        if resp.status_code >= 400:
            raise KanikoError(f'{PUSH_ERROR}: checking push permission for "{ref}": POST '
                              f"{url}: unexpected status code {resp.status_code}")
        location = resp.headers.get("Location")
        if location:
            if location.startswith("/"):
                location = f"{scheme}://{host}{location}"
            threading.Thread(target=_cancel_upload, args=(sess, location, headers),
                             daemon=True).start()
    except requests.exceptions.SSLError as exc:
        raise KanikoError(f'{PUSH_ERROR}: checking push permission for "{ref}": '
                          f"Get \"{scheme}://{host}/v2/\": tls: failed to verify certificate: "
                          f"x509: certificate signed by unknown authority ({exc})") from exc
    except requests.exceptions.ConnectionError as exc:
        raise KanikoError(f'{PUSH_ERROR}: checking push permission for "{ref}": '
                          f"Get \"{scheme}://{host}/v2/\": {exc}") from exc


def _cancel_upload(sess: requests.Session, location: str, headers: dict[str, str]) -> None:
    # the registry purges abandoned uploads; Kaniko ignores this failure too
    with contextlib.suppress(requests.exceptions.RequestException):
        sess.delete(location, headers=headers, timeout=30)


# -- build ---------------------------------------------------------------------------------
def _runroot(store: str) -> str:
    # containers/storage refuses runroots longer than 50 characters: a short one under /tmp
    return f"/tmp/kaniko-shim-{hashlib.sha256(os.path.abspath(store).encode()).hexdigest()[:12]}"


def _buildah(store: str, *args: str) -> list[str]:
    """buildah on the build's own storage (`store`: this build's scratch directory)."""
    return ["buildah", "--root", os.path.join(store, "buildah", "root"),
            "--runroot", _runroot(store), *args]


def _remove_store(store: str) -> None:
    """Drop the build's image store: unmount what buildah left mounted, then delete."""
    subprocess.run(_buildah(store, "rm", "--all"), capture_output=True, check=False)
    subprocess.run(_buildah(store, "rmi", "--all", "--force"), capture_output=True, check=False)
    prefix = os.path.realpath(store) + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:  # overlay's private bind mount
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    shutil.rmtree(_runroot(store), ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)


def _stream(cmd: list[str]) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line.rstrip("\n"), flush=True)
    return proc.wait()


def resolve_context(opts: Options, pmap: PathMap, tmp: str) -> str:
    ctx = opts.context
    if ctx.startswith("dir://"):
        ctx = ctx[len("dir://"):]
    if ctx.startswith("tar://"):
        src = ctx[len("tar://"):]
        if src == "stdin":
            raise KanikoError("tar://stdin contexts are not supported by the harness shim")
        host = pmap.host(src)
        out = os.path.join(tmp, "context")
        os.makedirs(out)
        with tarfile.open(host) as tf:
            tf.extractall(out, filter="data")
        ctx_host = out
    elif "://" in ctx:
        raise KanikoError(f"unsupported build context {opts.context!r} in the harness shim")
    else:
        ctx_host = pmap.host(ctx)
    if opts.context_sub_path:
        ctx_host = os.path.join(ctx_host, opts.context_sub_path)
    if not os.path.isdir(ctx_host):
        raise KanikoError(f"error resolving source context: {opts.context}: no such directory")
    return ctx_host


def resolve_dockerfile(opts: Options, pmap: PathMap, ctx_host: str) -> str:
    df = opts.dockerfile
    host = pmap.host(df) if os.path.isabs(df) else os.path.join(ctx_host, df)
    if not os.path.isfile(host):
        raise KanikoError(f"error resolving dockerfile path: please provide a valid path to a "
                          f"Dockerfile within the build context with --dockerfile ({df})")
    return host


def base_images(dockerfile: str) -> list[str]:
    out = []
    with open(dockerfile, encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split()
            if len(parts) >= 2 and parts[0].upper() == "FROM":
                img = next((p for p in parts[1:] if not p.startswith("--")), "")
                if img and img.lower() != "scratch" and "$" not in img:
                    out.append(img)
    return out


def run(argv: list[str]) -> int:
    opts = parse_args(argv)
    state = os.environ.get("KANIKO_SHIM_STATE_DIR") or tempfile.gettempdir()
    pmap = PathMap(json.loads(os.environ.get("KANIKO_SHIM_MOUNTS") or "{}"),
                   os.environ.get("KANIKO_SHIM_ROOT"))
    if opts.ignored:
        info(f"harness kaniko shim: ignoring {', '.join(sorted(set(opts.ignored)))}", "DEBU")
    tmp = tempfile.mkdtemp(prefix="kaniko-shim-", dir=os.path.join(state))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a deleted Job: clean up too
    try:
        return _run(opts, tmp, pmap, tmp)
    except KanikoError as exc:
        print(f"{exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # the store goes after the container has exited, as a pod's file system does: its
        # removal (seconds for an unpacked base) is not part of the build's time
        subprocess.Popen([sys.executable, "-m", "tools.kube.controllers.kaniko",
                          "--remove-store", tmp], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)


def _docker_config(pmap: PathMap) -> list[dict[str, Any]]:
    cfg_dir = os.environ.get("DOCKER_CONFIG", "/kaniko/.docker")
    host = pmap.mapped(os.path.join(cfg_dir, "config.json"))
    if not host or not os.path.isfile(host):
        return []
    with open(host, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if cfg.get("credsStore") or cfg.get("credHelpers"):
        info("credential helpers (credsStore/credHelpers) are not available in the harness "
             "shim; only static auths are used", "WARN")
    return [cfg]


def _run(opts: Options, store: str, pmap: PathMap, tmp: str) -> int:
    if not opts.destinations and not opts.no_push:
        raise KanikoError("you must provide --destination, or use --no-push")
    configs = _docker_config(pmap)
    authfile = write_authfile(os.path.join(tmp, "auth.json"), configs)
    auths: dict[str, Any] = {}
    if authfile:
        with open(authfile, encoding="utf-8") as fh:
            auths = json.load(fh)["auths"]
    if not opts.no_push:
        for dest in opts.destinations:
            host = registry_host(dest)
            verify, cert_dir, plain = _tls_for(host, opts, pmap, tmp, pull=False)
            check_push(dest, auths, os.path.join(cert_dir, "ca.crt") if verify and cert_dir
                       else verify, plain)
    ctx = resolve_context(opts, pmap, tmp)
    dockerfile = resolve_dockerfile(opts, pmap, ctx)
    tag = f"localhost/kaniko-shim/build-{os.getpid()}-{int(time.time())}"
    bud = _buildah(store, "bud", "--isolation", "chroot", "--layers=false", *ULIMITS,
                   "-f", dockerfile, "-t", tag, "--format", "docker")
    if authfile:
        bud += ["--authfile", authfile]
    for img in base_images(dockerfile):
        info(f"Retrieving image manifest {img}")
        verify, cert_dir, _plain = _tls_for(registry_host(img), opts, pmap, tmp, pull=True)
        if not verify or _probe_plain(registry_host(img)):
            bud += ["--tls-verify=false"]
        elif cert_dir:
            bud += ["--cert-dir", cert_dir]
    for ba in opts.build_args:
        bud += ["--build-arg", ba]
    for label in opts.labels:
        bud += ["--label", label]
    if opts.target:
        bud += ["--target", opts.target]
    bud.append(ctx)
    info("Built cross stage deps: map[]")
    info("Executing 0 build triggers")
    info(f"Building stage from {opts.context}")
    if _stream(bud) != 0:
        raise KanikoError("error building image: buildah bud failed")
    info("Taking snapshot of full filesystem...")
    try:
        digest = ""
        if opts.tar_path:
            out = pmap.host(opts.tar_path)
            dest_name = opts.destinations[0] if opts.destinations else "image:latest"
            subprocess.run(_buildah(store, "push", tag, f"docker-archive:{out}:{dest_name}"),
                           check=True, capture_output=True)
        if opts.no_push:
            info("Skipping push to container registry due to --no-push flag")
        for dest in [] if opts.no_push else opts.destinations:
            host = registry_host(dest)
            verify, cert_dir, _plain = _tls_for(host, opts, pmap, tmp, pull=False)
            digest_file = os.path.join(tmp, "digest")
            push = _buildah(store, "push", "--digestfile", digest_file, "--retry", "2",
                            f"--tls-verify={'true' if verify else 'false'}")
            if cert_dir and verify:
                push += ["--cert-dir", cert_dir]
            if authfile:
                push += ["--authfile", authfile]
            info(f"Pushing image to {dest}")
            res = subprocess.run([*push, tag, f"docker://{dest}"], capture_output=True,
                                 text=True, check=False)
            if res.returncode != 0:
                raise KanikoError(f"error pushing image: failed to push to destination {dest}: "
                                  f"{res.stderr.strip().splitlines()[-1] if res.stderr else ''}")
            with open(digest_file, encoding="utf-8") as fh:
                digest = fh.read().strip()
            info(f"Pushed {dest.rsplit(':', 1)[0] if ':' in dest.split('/')[-1] else dest}"
                 f"@{digest}")
        if opts.digest_file and digest:
            with open(pmap.host(opts.digest_file), "w",
                      encoding="utf-8") as fh:
                fh.write(digest)
        if opts.name_digest_file and digest and opts.destinations:
            with open(pmap.host(opts.name_digest_file), "w",
                      encoding="utf-8") as fh:
                fh.write(f"{opts.destinations[0].rsplit(':', 1)[0]}@{digest}\n")
    finally:
        subprocess.run(_buildah(store, "rmi", "-f", tag), capture_output=True, check=False)
    return 0


def _probe_plain(host: str) -> bool:
    try:
        requests.get(f"https://{host}/v2/", timeout=3, verify=False)
        return False
    except requests.exceptions.SSLError:
        return True
    except requests.RequestException:
        return False


if __name__ == "__main__":
    if sys.argv[1:2] == ["--remove-store"]:
        _remove_store(sys.argv[2])
        sys.exit(0)
    sys.exit(run(sys.argv[1:]))

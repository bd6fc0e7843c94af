"""pip, run for a dependency layer: wheels for the base's Python, a minimal environment.

pip gets nothing of the agent's environment (cloud keys, MGMT_AGENT_* secrets) but PATH,
PYTHONPATH (the agent image puts pip there), proxy and CA settings; HOME and TMPDIR are
directories of the build, so its downloads count against images.dependencies.max_layer_bytes
and the index login (images.dependencies.index_credentials_file) reaches it as a 0600
netrc in that HOME, never as an argument. pip evaluates the markers of *dependencies*
against the Python it runs on, not `--python-version` (pypa/pip#13296): a base running
another Python minor than the agent is refused rather than given a subtly wrong layer.
"""

from __future__ import annotations

import netrc
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from packaging.utils import canonicalize_name

from agent.errors import BuildError, InvalidActionError
from agent.images.base_python import BasePython
from agent.images.settings import DependencySettings
from agent.logs import redact_uris_in, register_secret, scrub
from agent.tls import verify_for

PASSED_ENV = ("PATH", "PYTHONPATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
              "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")
MAX_NETRC_BYTES = 64 * 1024
POLL_SECONDS = 1.0


def check_python(base: BasePython) -> None:
    """Refuse a base whose Python minor differs from the agent's (see the module doc)."""
    agent = f"{sys.version_info.major}.{sys.version_info.minor}"
    if base.version != agent:
        raise BuildError(
            f"the base image runs Python {base.version}, the agent's pip Python {agent}: pip "
            "evaluates the markers of dependencies against its own Python, so the layer could "
            "lack or add packages. Use a base image with Python " + agent + ", "
            "images.builder=kaniko, or images.dependencies.enabled=false")


def pip_environment(home: Path, tmp: Path, credentials: Path | None) -> dict[str, str]:
    """The environment pip runs with; the netrc copied into `home` (0600) when configured."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONNOUSERSITE="1")
    if credentials is not None:
        target = home / ".netrc"
        try:
            with credentials.open("rb") as stream:
                data = stream.read(MAX_NETRC_BYTES + 1)
        except OSError as exc:
            raise BuildError("images.dependencies.index_credentials_file: cannot read "
                             f"{credentials}: {exc.strerror or exc}") from None
        if len(data) > MAX_NETRC_BYTES:
            raise BuildError("images.dependencies.index_credentials_file is larger than 64 KiB")
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        for password in netrc_passwords(target):
            register_secret(password)
        env["NETRC"] = str(target)
    return env


def netrc_passwords(path: Path) -> list[str]:
    """The passwords of a netrc file (for the scrubber); BuildError when it does not parse."""
    try:
        parsed = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:  # its message may quote a token: not shown
        raise BuildError("images.dependencies.index_credentials_file is not a netrc file "
                         f"(line {exc.lineno})") from None
    return [password for _login, _account, password in parsed.hosts.values() if password]


def pip_argv(site: Path, requirements: Path, constraints: Path, base: BasePython,
             settings: DependencySettings) -> list[str]:
    argv = [sys.executable, "-m", "pip", "install", "--isolated", "--no-input",
            "--disable-pip-version-check", "--progress-bar", "off", "--no-compile",
            "--no-cache-dir", "--only-binary=:all:", "--implementation", "cp",
            "--python-version", base.version, "--target", str(site), "-r", str(requirements),
            "-c", str(constraints), "--timeout", str(settings.pip_timeout_seconds)]
    for platform in base.platforms():
        argv += ["--platform", platform]
    if settings.index_url:
        argv += ["--index-url", settings.index_url]
    for url in settings.extra_index_urls:
        argv += ["--extra-index-url", url]
    for host in settings.trusted_hosts:
        argv += ["--trusted-host", host]
    return argv


def pip_reason(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("ERROR:")]
    text = " ".join(lines) or output.strip()[-800:]
    return scrub(redact_uris_in(text))[:1500]


def bytes_under(directory: Path) -> int:
    """Bytes of the regular files under `directory` (files vanishing meanwhile skipped)."""
    total = 0
    for root, _dirs, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def _run(argv: list[str], env: dict[str, str], work: Path,
         settings: DependencySettings) -> tuple[int, str]:
    """pip's exit code and output; stopped past the time or size limit."""
    deadline = time.monotonic() + settings.install_timeout_seconds
    with open(work / "pip.log", "w+b") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env,
                                   cwd=work, stdin=subprocess.DEVNULL)
        try:
            while True:
                try:
                    code = process.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() > deadline:
                    raise BuildError(f"pip did not finish within "
                                     f"{settings.install_timeout_seconds:.0f} s "
                                     "(images.dependencies.install_timeout_seconds)")
                _check_size(work, settings)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        output.seek(0, os.SEEK_END)
        output.seek(max(0, output.tell() - 64 * 1024))
        return code, output.read().decode("utf-8", "replace")


def _check_size(directory: Path, settings: DependencySettings) -> None:
    used = bytes_under(directory)
    if used > settings.max_layer_bytes:
        raise InvalidActionError(
            f"the model's requirements need more than {settings.max_layer_bytes} bytes "
            f"(images.dependencies.max_layer_bytes; {used} bytes downloaded and installed "
            "so far): raise that limit, or use a base image that has the large packages")


def install(missing: list[str], base: BasePython, settings: DependencySettings,
            site: Path, ca_bundle: Path | None = None) -> None:
    """pip install `missing` for the base's Python into `site`, then drop what the base has.

    `ca_bundle` (images.ca_bundle, tls.ca_bundle unless overridden): trusted for the
    index in addition to the system roots, as by the registry client.
    """
    check_python(base)
    work = site.parent
    (work / "requirements.txt").write_text("\n".join(missing) + "\n")
    (work / "constraints.txt").write_text("".join(
        f"{name}=={version}\n" for name, version in sorted(base.distributions.items())
        if re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]*", version)))
    argv = pip_argv(site, work / "requirements.txt", work / "constraints.txt", base, settings)
    verify = verify_for(ca_bundle, "images.ca_bundle", error=BuildError)
    if isinstance(verify, str):
        argv += ["--cert", verify]
    home, tmp = work / "home", work / "tmp"
    home.mkdir(mode=0o700)
    tmp.mkdir(mode=0o700)
    env = pip_environment(home, tmp, settings.index_credentials_file)
    code, output = _run(argv, env, work, settings)
    if code != 0:
        reason = pip_reason(output)
        unsatisfiable = re.search(r"No matching distribution|Could not find a version|"
                                  r"ResolutionImpossible|conflicting dependencies|"
                                  r"versions have conflicting", reason)
        error = InvalidActionError if unsatisfiable else BuildError
        raise error(f"the model's requirements cannot be installed as wheels for Python "
                    f"{base.version} on {base.platforms()[0]} (pip: {reason}); the base "
                    "image's packages are kept as they are. Use a base image that has them, "
                    "or images.builder=kaniko for what needs a compiler")
    _check_size(site, settings)
    _drop_base_distributions(site, base.distributions)
    # console scripts carry the agent's interpreter in their #! line: useless in the image
    shutil.rmtree(site / "bin", ignore_errors=True)


def _drop_base_distributions(site: Path, base: dict[str, str]) -> None:
    """Remove what pip installed in the very version the base has (constraints pin them)."""
    for info in sorted(site.glob("*.dist-info")):
        name, _, version = info.name[:-len(".dist-info")].partition("-")
        if base.get(canonicalize_name(name)) != version:
            continue
        for line in (info / "RECORD").read_text().splitlines():
            path = (site / line.rsplit(",", 2)[0]).resolve()
            if path.is_relative_to(site.resolve()) and path.is_file():
                path.unlink()
        for leftover in sorted(info.rglob("*"), reverse=True):
            leftover.unlink() if leftover.is_file() else leftover.rmdir()
        info.rmdir()
    for directory in sorted((p for p in site.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()

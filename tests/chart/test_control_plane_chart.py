"""charts/control-plane: rendering, strict values, and installs on the harness cluster.

The install tests run the chart in the harness cluster (pods in podman on the
host network): two replicas on the harness's PostgreSQL, and one replica on
SQLite serving HTTPS; then `helm test`, then admin calls through every replica.
They need the agent image in the harness registry (tools/build-agent-image)
and are skipped without it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import requests
import yaml
from chart_helpers import ROOT, find, find_helm, helm

from agent.controlplane.server.client import AdminClient

CHART = ROOT / "charts" / "control-plane"
CI = sorted((CHART / "ci").glob("*.yaml"))
BASE = ["image.repository=registry.example.com/management-agent",
        "adminToken.secretName=cp-admin"]


def render(files: list[Path] = (), sets: list[str] = ()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    args = [arg for f in files for arg in ("--values", str(f))]
    args += [arg for s in sets for arg in ("--set", s)]
    proc = helm("template", "cp", str(CHART), "--namespace", "mlops", *args)
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_error(sets: list[str]) -> str:
    args = [arg for s in sets for arg in ("--set", s)]
    proc = helm("template", "cp", str(CHART), *args, check=False)
    assert proc.returncode != 0
    return proc.stderr


@pytest.mark.parametrize("values", CI, ids=lambda p: p.stem)
def test_ci_scenarios_lint_and_render_valid_kubernetes(values: Path) -> None:
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), "--values",
                                       str(values)).stdout
    for obj in render([values]):
        kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_sqlite_is_one_replica_on_a_kept_claim() -> None:
    objects = render(sets=BASE)
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    claim = find(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MGMT_AGENT_CP_DB"]["value"] == "/data/control-plane.db"
    assert "MGMT_AGENT_CP_DATABASE_URL" not in env


def test_postgresql_reads_its_url_from_the_secret_and_scales() -> None:
    objects = render(sets=[*BASE, "storage.type=postgresql", "storage.postgresql.urlSecret=db",
                           "replicas=3"])
    assert [o for o in objects if o["kind"] == "PersistentVolumeClaim"] == []
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["MGMT_AGENT_CP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "db", "key": "url"}
    assert find(objects, "Deployment")["spec"]["replicas"] == 3
    assert "postgresql://" not in json.dumps(objects)  # only a reference, never the URL


def test_tls_serves_https_from_the_secret_and_probes_over_https() -> None:
    objects = render(sets=[*BASE, "tls.enabled=true", "tls.secretName=cp-tls"])
    container = find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MGMT_AGENT_CP_TLS_CERT"] == "/var/run/control-plane/tls/tls.crt"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    test = next(o for o in objects if o["kind"] == "Pod")["spec"]["containers"][0]["args"]
    assert test[test.index("--url") + 1].startswith("https://cp-control-plane.mlops.svc:443")
    assert test[test.index("--ca-bundle") + 1] == "/var/run/control-plane/tls/ca.crt"


@pytest.mark.parametrize(("sets", "message"), [
    ([], "unpublished placeholder"),
    (["image.repository=r/x"], "adminToken.secretName is required"),
    ([*BASE, "replicas=2"], "replicas > 1 needs storage.type=postgresql"),
    ([*BASE, "storage.type=postgresql"], "needs storage.postgresql.urlSecret"),
    ([*BASE, "tls.enabled=true"], "tls.enabled needs tls.secretName"),
    ([*BASE, "ingress.enabled=true"], "ingress.enabled needs ingress.host"),
    ([*BASE, "storage.type=mysql"], "storage.type"),
    ([*BASE, "replica=2"], "Additional property replica is not allowed"),
])
def test_bad_values_fail_with_what_to_do(sets: list[str], message: str) -> None:
    assert message in render_error(sets)


def test_every_value_is_documented() -> None:
    from test_chart_render import _documented_keys_problems

    assert _documented_keys_problems((CHART / "values.yaml").read_text()) == []


# -- install on the harness cluster ---------------------------------------------------------


def _kubectl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    from tests.fixtures.kube import find_binary

    return subprocess.run([find_binary("kubectl") or "kubectl", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def _container_port(pod: dict[str, Any]) -> int:
    return int(pod["spec"]["containers"][0]["ports"][0]["containerPort"])


def _ready_addresses(env: dict[str, str], namespace: str, count: int) -> list[str]:
    """`podIP:containerPort` of the ready control-plane pods (the stand-in routes no
    Service IPs and has no cluster DNS, so the test talks to each replica directly)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        proc = _kubectl(env, "-n", namespace, "get", "pods", "-l",
                        "app.kubernetes.io/name=control-plane", "-o", "json")
        pods = json.loads(proc.stdout or "{}").get("items", [])
        ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in p.get("status", {}).get("conditions", []))]
        if len(ready) >= count:
            return [f"{p['status']['podIP']}:{_container_port(p)}" for p in ready]
        time.sleep(1)
    raise AssertionError(_kubectl(env, "-n", namespace, "get", "pods", "-o", "yaml").stdout)


@pytest.mark.parametrize("storage", ["postgresql", "sqlite-tls"])
def test_install_passes_helm_test_and_replicas_share_state(
    storage: str, kube: Any, harness_env: dict[str, str], tmp_path: Path
) -> None:
    """postgresql: two replicas on the harness PostgreSQL, plain HTTP. sqlite-tls: one
    replica on a PVC serving HTTPS with a certificate Secret (the harness's server
    certificate, valid for every pod address of the harness), `helm test` trusting its CA."""
    from tests.fixtures.controlplane import drop_database, fresh_database

    registry = harness_env.get("HARNESS_REGISTRY")
    from agent import __version__

    image = f"{registry}/management-agent"
    if not registry or subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{image}:{__version__}"],
        capture_output=True, timeout=60).returncode != 0:
        pytest.skip("agent image not in the harness registry: run tools/build-agent-image")
    if not harness_env.get("HARNESS_POSTGRES_URL"):
        pytest.fail("HARNESS_POSTGRES_URL missing: run tools/harness up", pytrace=False)
    namespace = kube.namespace("cp")
    env = kube.env()
    admin_token = secrets.token_hex(16)
    assert _kubectl(env, "-n", namespace, "create", "secret", "generic", "cp-admin",
                    f"--from-literal=token={admin_token}").returncode == 0
    read_token = secrets.token_hex(16)
    assert _kubectl(env, "-n", namespace, "create", "secret", "generic", "cp-read",
                    f"--from-literal=token={read_token}").returncode == 0
    sets = [f"image.repository={image}", "image.pullPolicy=Always",
            "adminToken.secretName=cp-admin", "readToken.secretName=cp-read"]
    database = ""
    scheme, replicas = "http", 1
    verify: bool | str = True
    if storage == "postgresql":
        database = fresh_database(harness_env["HARNESS_POSTGRES_URL"])
        assert _kubectl(env, "-n", namespace, "create", "secret", "generic", "cp-db",
                        f"--from-literal=url={database}").returncode == 0
        sets += ["storage.type=postgresql", "storage.postgresql.urlSecret=cp-db", "replicas=2"]
        replicas = 2
    else:
        tls = Path(harness_env["HARNESS_DIR"]) / "tls"
        assert _kubectl(env, "-n", namespace, "create", "secret", "generic", "cp-tls",
                        f"--from-file=tls.crt={tls / 'server.crt'}",
                        f"--from-file=tls.key={tls / 'server.key'}",
                        f"--from-file=ca.crt={tls / 'ca.crt'}").returncode == 0
        sets += ["tls.enabled=true", "tls.secretName=cp-tls"]
        scheme, verify = "https", str(tls / "ca.crt")
    helm_args = [arg for s in sets for arg in ("--set", s)]
    try:
        # the stand-in has no volume provisioner: a claim stays Pending (its pods still get a
        # directory), so `helm --wait`, which waits for claims to be Bound, is for PostgreSQL
        wait = ["--wait", "--timeout", "4m"] if storage == "postgresql" else []
        proc = subprocess.run([find_helm(), "install", "cp", str(CHART), "-n", namespace,
                               *wait, *helm_args],
                              capture_output=True, text=True, timeout=400, env=env)
        assert proc.returncode == 0, proc.stderr + _kubectl(
            env, "-n", namespace, "get", "pods", "-o", "yaml").stdout
        addresses = _ready_addresses(env, namespace, replicas)
        assert len(set(addresses)) == replicas
        # the stand-in gives pods no cluster DNS: the test pod calls one replica directly
        subprocess.run([find_helm(), "upgrade", "cp", str(CHART), "-n", namespace,
                        "--reuse-values", "--set",
                        f"tests.url={scheme}://{addresses[0]}"],
                       capture_output=True, text=True, timeout=400, env=env, check=True)
        addresses = _ready_addresses(env, namespace, replicas)
        test = subprocess.run([find_helm(), "test", "cp", "-n", namespace, "--logs",
                               "--timeout", "3m"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert test.returncode == 0, test.stdout + test.stderr
        # what one replica writes, every replica serves
        clients = [AdminClient(f"{scheme}://{address}", admin_token, timeout=10,
                               verify=verify) for address in addresses]
        clients[0].create_environment("models")
        for client in clients:
            assert [e["id"] for e in client.list_environments()] == ["models"]
            client.close()
        assert requests.get(f"{scheme}://{addresses[-1]}/api/v1/healthz",
                            timeout=10, verify=verify).status_code == 200
        # readToken: the dashboard lets its holder in (read-only pages, no forms)
        login = requests.post(f"{scheme}://{addresses[0]}/ui/login", data={"token": read_token},
                              timeout=10, verify=verify, allow_redirects=False)
        assert login.status_code == 303 and "mgmt_cp_ui" in login.cookies, login.text
        page = requests.get(f"{scheme}://{addresses[0]}/ui", cookies=login.cookies,
                            timeout=10, verify=verify)
        assert page.status_code == 200 and "models" in page.text
    finally:
        subprocess.run([find_helm(), "uninstall", "cp", "-n", namespace], capture_output=True,
                       timeout=120, env=env)
        _kubectl(env, "delete", "namespace", namespace, "--wait=false")
        if database:
            drop_database(database)

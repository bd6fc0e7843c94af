"""The three registry modes of tools/harness, exercised with skopeo and plain HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
import requests

from tests.fixtures.harness import Moto, Registry

pytestmark = pytest.mark.integration


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)


def inspect_flags(reg: Registry, password: str | None = None) -> list[str]:
    flags = ["--tls-verify=false"] if reg.scheme == "http" else ["--cert-dir", str(reg.cert_dir)]
    if reg.username:
        flags += ["--creds", f"{reg.username}:{password or reg.password}"]
    return flags


def push_pull(reg: Registry, tiny_image: str, tmp_path: Path, repo: str) -> None:
    ref = reg.ref(repo, "v1")
    pushed = skopeo("copy", "--quiet", *reg.skopeo_flags("dest"), tiny_image, f"docker://{ref}")
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo("copy", "--quiet", *reg.skopeo_flags("src"), f"docker://{ref}",
                    f"oci:{tmp_path / 'out'}:v1")
    assert pulled.returncode == 0, pulled.stderr
    remote = skopeo("inspect", "--raw", *inspect_flags(reg), f"docker://{ref}")
    local = skopeo("inspect", "--raw", f"oci:{tmp_path / 'out'}:v1")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)


def test_plain_registry_push_pull(registry: Registry, tiny_image: str, tmp_path: Path) -> None:
    assert requests.get(f"{registry.url}/v2/", timeout=10).status_code == 200
    push_pull(registry, tiny_image, tmp_path, "harness-test/plain")


def test_tls_registry_push_pull_with_only_the_ca(tls_registry: Registry, tiny_image: str,
                                                tmp_path: Path) -> None:
    assert tls_registry.cert_dir is not None
    assert sorted(p.name for p in tls_registry.cert_dir.iterdir()) == ["ca.crt"]
    push_pull(tls_registry, tiny_image, tmp_path, "harness-test/tls")


def test_tls_registry_refuses_anonymous_and_wrong_password(tls_registry: Registry) -> None:
    answer = requests.get(f"{tls_registry.url}/v2/", verify=str(tls_registry.ca_cert), timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = skopeo("inspect", *inspect_flags(tls_registry, "wrong"),
                   f"docker://{tls_registry.ref('base/python', 'bookworm')}")
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower()


def test_token_registry_push_pull(token_registry: Registry, tiny_image: str,
                                  tmp_path: Path) -> None:
    push_pull(token_registry, tiny_image, tmp_path, "harness-test/token")


def test_token_service_issues_scoped_rs256_tokens(token_registry: Registry) -> None:
    ca = str(token_registry.ca_cert)
    challenge = requests.get(f"{token_registry.url}/v2/", verify=ca, timeout=10)
    assert challenge.status_code == 401
    header = challenge.headers["WWW-Authenticate"]
    assert header.startswith("Bearer ")
    assert f'realm="{token_registry.realm}"' in header
    assert f'service="{token_registry.service}"' in header

    params = {"service": token_registry.service, "scope": "repository:harness-test/x:pull,push"}
    refused = requests.get(str(token_registry.realm), params=params, verify=ca, timeout=10,
                           auth=(str(token_registry.username), "wrong"))
    assert refused.status_code == 401
    answer = requests.get(str(token_registry.realm), params=params, verify=ca, timeout=10,
                          auth=(str(token_registry.username), str(token_registry.password)))
    assert answer.status_code == 200
    token = answer.json()["token"]
    head, claims = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
                    for part in token.split(".")[:2])
    assert head["alg"] == "RS256" and head["x5c"]
    assert claims["aud"] == token_registry.service
    assert claims["access"] == [{"type": "repository", "name": "harness-test/x",
                                 "actions": ["pull", "push"]}]
    catalog = requests.get(f"{token_registry.url}/v2/", verify=ca, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    assert catalog.status_code == 200


def test_ecr_login_from_moto_pushes_to_the_emulated_ecr(moto: Moto, ecr: Registry,
                                                        tiny_image: str) -> None:
    data = moto.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    assert moto.ecr_registry == ecr.host
    ref = f"{moto.ecr_registry}/harness-test/ecr:v1"
    pushed = skopeo("copy", "--quiet", "--dest-cert-dir", str(ecr.cert_dir), "--dest-creds",
                    f"{user}:{password}", tiny_image, f"docker://{ref}")
    assert pushed.returncode == 0, pushed.stderr


def test_base_image_is_debian_python(registry: Registry, harness_env: dict[str, str]) -> None:
    ref = harness_env["HARNESS_BASE_IMAGE"]
    assert ref == registry.ref("base/python", "bookworm")
    config = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{ref}")
    assert config.returncode == 0, config.stderr
    image = json.loads(config.stdout)
    assert image["config"]["Cmd"] == ["python3"]
    assert any(e.startswith("PATH=") for e in image["config"]["Env"])
    assert image["architecture"] == "amd64" and image["os"] == "linux"


def test_token_service_oauth2_password_grant(token_registry: Registry) -> None:
    form = {"grant_type": "password", "username": token_registry.username,
            "password": token_registry.password, "service": token_registry.service,
            "scope": "repository:a/b:pull repository:c/d:pull,push"}
    answer = requests.post(str(token_registry.realm), data=form, timeout=10,
                           verify=str(token_registry.ca_cert))
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    claims = token.split(".")[1]
    access = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["access"]
    assert [a["name"] for a in access] == ["a/b", "c/d"]
    form["password"] = "wrong"
    refused = requests.post(str(token_registry.realm), data=form, timeout=10,
                            verify=str(token_registry.ca_cert))
    assert refused.status_code == 401

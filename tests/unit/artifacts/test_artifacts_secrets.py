"""`secrets migrate`: reference discovery, planned keys, and the patch it sends.

The Kubernetes API is a small in-memory fake of `KubeClient`'s list/get/patch
here (the stand-in cluster run is an integration test); it mimics a merge patch
of `data`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from agent.artifacts.credentials import parse_credentials
from agent.artifacts.secrets import ANNOTATION, migrate, plan_additions, referenced_secrets


class FakeCluster:
    def __init__(self, deployments: list[dict[str, Any]], secrets: dict[str, dict[str, str]],
                 annotations: dict[str, dict[str, str]] | None = None) -> None:
        self.deployments = deployments
        self.secrets = {n: {k: base64.b64encode(v.encode()).decode() for k, v in d.items()}
                        for n, d in secrets.items()}
        self.annotations = annotations or {}
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def list(self, api_version: str, kind: str, namespace: str | None = None
             ) -> list[dict[str, Any]]:
        assert (api_version, kind) == ("apps/v1", "Deployment")
        return self.deployments

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None:
        assert (api_version, kind) == ("v1", "Secret")
        if name not in self.secrets:
            return None
        return {"metadata": {"name": name, "annotations": self.annotations.get(name, {})},
                "data": dict(self.secrets[name])}

    def patch(self, api_version: str, kind: str, name: str, patch: Mapping[str, Any],
              namespace: str | None = None) -> dict[str, Any]:
        self.patches.append((name, dict(patch)))
        self.secrets[name].update(patch["data"])
        return {}

    def decoded(self, name: str) -> dict[str, str]:
        return {k: base64.b64decode(v).decode() for k, v in self.secrets[name].items()}


def _deployment(**pod: Any) -> dict[str, Any]:
    return {"metadata": {"name": "d", "annotations": {ANNOTATION: "managed-creds"}},
            "spec": {"template": {"spec": pod}}}


DEPLOYMENTS = [
    _deployment(
        containers=[{"name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {
            "name": "aws-creds", "key": "AWS_ACCESS_KEY_ID"}}}],
            "envFrom": [{"secretRef": {"name": "rclone-creds"}}]}],
        initContainers=[{"name": "i", "envFrom": [{"secretRef": {"name": "missing"}}]}],
        volumes=[{"name": "v", "secret": {"secretName": "seldon-creds"}},
                 {"name": "p", "projected": {"sources": [{"secret": {"name": "other"}}]}}],
    ),
]


def test_referenced_secrets() -> None:
    assert referenced_secrets(DEPLOYMENTS) == {
        "aws-creds", "rclone-creds", "missing", "seldon-creds", "other", "managed-creds"}


def test_plan_aws_to_rclone_and_back() -> None:
    aws = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1"}
    add = plan_additions(aws)
    assert add == {"RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
                   "RCLONE_CONFIG_S3_ENV_AUTH": "false", "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "k",
                   "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "s",
                   "RCLONE_CONFIG_S3_ENDPOINT": "http://minio:9000",
                   "RCLONE_CONFIG_S3_REGION": "eu-west-1"}
    both = {**aws, **add}
    assert plan_additions(both) == {}
    rclone = {k: v for k, v in add.items()}
    back = plan_additions(rclone)
    assert back["AWS_ACCESS_KEY_ID"] == "k" and back["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert back["USE_SSL"] == "0"
    # the migrated secret parses to the same credentials in either format
    a, r = parse_credentials(aws).s3, parse_credentials({**rclone, **back}).s3
    assert a is not None and r is not None
    assert (a.access_key_id, a.secret_access_key, a.endpoint_url, a.region) == (
        r.access_key_id, r.secret_access_key, r.endpoint_url, r.region)


def test_plan_nothing_for_non_s3_or_env_auth() -> None:
    assert plan_additions({"token": "x"}) == {}
    env_auth = {"RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_ENV_AUTH": "true"}
    assert plan_additions(env_auth) == {}


def test_migrate_patches_only_missing_keys_and_prints_no_values() -> None:
    cluster = FakeCluster(DEPLOYMENTS, {
        "aws-creds": {"AWS_ACCESS_KEY_ID": "AKIDVALUE", "AWS_SECRET_ACCESS_KEY": "SECRETVALUE"},
        "rclone-creds": {"RCLONE_CONFIG_S3_TYPE": "s3",
                         "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "AKIDVALUE",
                         "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "SECRETVALUE"},
        "seldon-creds": {"awsAccessKeyID": "AKIDVALUE", "awsSecretAccessKey": "SECRETVALUE"},
        "other": {"token": "SECRETVALUE"},
        "managed-creds": {"AWS_ACCESS_KEY_ID": "AKIDVALUE", "AWS_SECRET_ACCESS_KEY": "SECRETVALUE",
                          "RCLONE_CONFIG_S3_TYPE": "s3"},
    }, {"seldon-creds": {"machinelearning.seldon.io/s3-endpoint": "store:8333",
                         "machinelearning.seldon.io/s3-usehttps": "0"}})
    out = io.StringIO()
    assert migrate(cluster, "ns", dry_run=True, out=out) == 0
    assert cluster.patches == []
    assert "would add" in out.getvalue()
    out = io.StringIO()
    assert migrate(cluster, "ns", out=out) == 0
    text = out.getvalue()
    assert "AKIDVALUE" not in text and "SECRETVALUE" not in text
    assert "secret ns/missing: not found, skipped" in text
    assert "secret ns/other: nothing to add" in text
    assert "secret ns/managed-creds: nothing to add" in text  # has an rclone remote already
    patched = {name for name, _ in cluster.patches}
    assert patched == {"aws-creds", "rclone-creds", "seldon-creds"}
    assert cluster.decoded("aws-creds")["RCLONE_CONFIG_S3_SECRET_ACCESS_KEY"] == "SECRETVALUE"
    assert cluster.decoded("rclone-creds")["AWS_ACCESS_KEY_ID"] == "AKIDVALUE"
    seldon = cluster.decoded("seldon-creds")
    assert seldon["AWS_ENDPOINT_URL"] == "http://store:8333"
    assert seldon["RCLONE_CONFIG_S3_ENDPOINT"] == "http://store:8333"
    assert seldon["awsAccessKeyID"] == "AKIDVALUE"  # nothing removed
    # idempotent
    cluster.patches.clear()
    assert migrate(cluster, "ns", out=io.StringIO()) == 0
    assert cluster.patches == []

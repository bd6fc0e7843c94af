"""`management-agent secrets migrate` against the project's Kubernetes API stand-in
(tools/kube, started in-process by the `kube_api` fixture)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from agent.artifacts.secrets import ANNOTATION
from agent.cli import main

pytestmark = pytest.mark.integration


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_migrate_namespace(kube_api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from kubernetes import client

    api = kube_api.client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = kube_api.namespace("art")
    core.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "aws-creds"}, "data": {
        "AWS_ACCESS_KEY_ID": _b64("AKIDVALUE"), "AWS_SECRET_ACCESS_KEY": _b64("SECRETVALUE"),
        "AWS_ENDPOINT_URL": _b64("http://minio:9000")}})
    core.create_namespaced_secret(ns, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "rclone-creds"}, "data": {
        "RCLONE_CONFIG_S3_TYPE": _b64("s3"), "RCLONE_CONFIG_S3_ACCESS_KEY_ID": _b64("AKIDVALUE"),
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": _b64("SECRETVALUE")}})
    labels = {"app": "m"}
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "model-a", "annotations": {ANNOTATION: "rclone-creds"}},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [
                {"secretRef": {"name": "aws-creds"}}]}]}}},
    })
    argv = ["secrets", "migrate", "--namespace", ns, "--kubeconfig", str(kube_api.kubeconfig)]
    assert main([*argv, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would add" in out
    assert "RCLONE_CONFIG_S3_TYPE" not in core.read_namespaced_secret("aws-creds", ns).data
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "AKIDVALUE" not in out and "SECRETVALUE" not in out
    aws = core.read_namespaced_secret("aws-creds", ns).data
    assert base64.b64decode(aws["RCLONE_CONFIG_S3_ENDPOINT"]).decode() == "http://minio:9000"
    assert "AWS_ACCESS_KEY_ID" in aws  # nothing removed
    rclone = core.read_namespaced_secret("rclone-creds", ns).data
    assert base64.b64decode(rclone["AWS_SECRET_ACCESS_KEY"]).decode() == "SECRETVALUE"
    assert main(argv) == 0
    assert capsys.readouterr().out.count("nothing to add") == 2


def test_migrate_unreachable_cluster(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        "    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n"
        "    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t0ken-value\n"
    )
    assert main(["secrets", "migrate", "-n", "x", "--kubeconfig", str(config)]) == 1
    err = capsys.readouterr().err
    assert "error talking to the cluster" in err and "t0ken-value" not in err

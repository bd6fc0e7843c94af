"""Credential parsing: every supported secret format, and no secret in repr()."""

from __future__ import annotations

import base64
import json

from agent.artifacts.credentials import parse_credentials


def test_aws_style() -> None:
    creds = parse_credentials({
        "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_SESSION_TOKEN": "tok", "AWS_ENDPOINT_URL": "minio:9000", "USE_SSL": "0",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }).s3
    assert creds is not None
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == (
        "AKIA1", "s3cr3t", "tok")
    assert creds.endpoint_url == "http://minio:9000"
    assert creds.region == "eu-west-1"
    assert creds.source == "aws"
    assert "s3cr3t" not in repr(creds) and "AKIA1" not in repr(creds)


def test_rclone_style() -> None:
    creds = parse_credentials({
        "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Minio",
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "k", "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "s",
        "RCLONE_CONFIG_S3_ENDPOINT": "http://127.0.0.1:9000",
        "RCLONE_CONFIG_S3_REGION": "us-east-2", "RCLONE_CONFIG_S3_ENV_AUTH": "false",
    }).s3
    assert creds is not None and creds.source == "rclone"
    assert (creds.access_key_id, creds.secret_access_key) == ("k", "s")
    assert creds.endpoint_url == "http://127.0.0.1:9000"
    assert creds.region == "us-east-2" and creds.path_style is True and not creds.env_auth


def test_rclone_env_auth_and_other_remote_name() -> None:
    creds = parse_credentials({
        "RCLONE_CONFIG_MYSTORE_TYPE": "s3", "RCLONE_CONFIG_MYSTORE_ENV_AUTH": "true",
        "RCLONE_CONFIG_GDRIVE_TYPE": "drive",
    }).s3
    assert creds is not None and creds.env_auth and not creds.has_keys


def test_seldon_style_with_annotations() -> None:
    creds = parse_credentials(
        {"awsAccessKeyID": "k", "awsSecretAccessKey": "s"},
        {"machinelearning.seldon.io/s3-endpoint": "store:8333",
         "machinelearning.seldon.io/s3-usehttps": "0"},
    ).s3
    assert creds is not None and creds.source == "seldon"
    assert creds.endpoint_url == "http://store:8333"
    assert creds.has_keys


def test_aws_wins_but_endpoint_gap_filled() -> None:
    creds = parse_credentials({
        "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
        "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "x",
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "y", "RCLONE_CONFIG_S3_ENDPOINT": "http://e:1",
    }).s3
    assert creds is not None and creds.access_key_id == "a"


def test_gcs_http_mlflow_oci() -> None:
    key = {"type": "service_account", "client_email": "x@y"}
    auth = base64.b64encode(b"user:pw").decode()
    creds = parse_credentials({
        "gcs-key.json": json.dumps(key),
        "token": "abc",
        "MLFLOW_TRACKING_TOKEN": "mt",
        ".dockerconfigjson": json.dumps({"auths": {"reg:5000": {"auth": auth}}}),
    })
    assert creds.gcs is not None and creds.gcs.service_account_info == key
    assert creds.http is not None and creds.http.authorization == "Bearer abc"
    assert creds.mlflow is not None and creds.mlflow.token == "mt"
    assert creds.oci is not None and creds.oci.for_registry("reg:5000") == ("user", "pw")
    for part in (creds.gcs, creds.http, creds.mlflow, creds.oci):
        assert "abc" not in repr(part) and "pw" not in repr(part) and "mt'" not in repr(part)


def test_authorization_header_and_empty() -> None:
    http = parse_credentials({"Authorization": "Basic Zm9vOmJhcg=="}).http
    assert http is not None and http.authorization == "Basic Zm9vOmJhcg=="
    empty = parse_credentials(None)
    assert empty.s3 is None and empty.gcs is None and empty.http is None

"""S3 (SeaweedFS), moto and fake-gcs-server answer real clients."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from tests.fixtures.harness import S3, Gcs, Moto

pytestmark = pytest.mark.integration


def test_s3_put_get_and_list(s3: S3) -> None:
    client = s3.client()
    key = f"harness-test/{uuid.uuid4().hex}/model.bin"
    client.put_object(Bucket=s3.bucket, Key=key, Body=b"weights" * 1000)
    assert client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"weights" * 1000
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=key.rsplit("/", 1)[0])
    assert [o["Key"] for o in listed["Contents"]] == [key]
    client.delete_object(Bucket=s3.bucket, Key=key)


def test_s3_refuses_wrong_keys_and_anonymous(s3: S3) -> None:
    with pytest.raises(ClientError) as err:
        s3.client(aws_secret_access_key="wrong").list_objects_v2(Bucket=s3.bucket)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError):
        s3.client(aws_access_key_id="nobody").list_objects_v2(Bucket=s3.bucket)
    assert requests.get(f"{s3.endpoint}/{s3.bucket}", timeout=10).status_code == 403


def test_gcs_upload_download_json_api(gcs: Gcs) -> None:
    name = f"harness-test/{uuid.uuid4().hex}.txt"
    upload = requests.post(f"{gcs.endpoint}/upload/storage/v1/b/{gcs.bucket}/o",
                           params={"uploadType": "media", "name": name}, data=b"hello gcs",
                           headers={"Content-Type": "text/plain"}, timeout=10)
    assert upload.status_code == 200, upload.text
    assert upload.json()["md5Hash"]
    object_url = f"{gcs.endpoint}/storage/v1/b/{gcs.bucket}/o/{quote(name, safe='')}"
    assert requests.get(object_url, timeout=10).json()["size"] == "9"
    body = requests.get(object_url, params={"alt": "media"}, timeout=10)
    assert body.content == b"hello gcs"


def test_moto_s3_and_sts(moto: Moto) -> None:
    s3 = moto.client("s3")
    bucket = f"harness-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    creds = moto.client("sts").assume_role_with_web_identity(
        RoleArn=f"arn:aws:iam::{moto.account}:role/agent", RoleSessionName="harness",
        WebIdentityToken="any-token")["Credentials"]
    assert creds["AccessKeyId"] and creds["SecretAccessKey"]

"""Checks run with the servers' venv python (boto3 lives there, not in the driver).

python -m tools.harnesslib.venvtasks s3-buckets ENDPOINT ACCESS SECRET BUCKET...
python -m tools.harnesslib.venvtasks ecr-login MOTO_ENDPOINT EXPECTED_PASSWORD
"""

from __future__ import annotations

import base64
import sys

import boto3
from botocore.exceptions import ClientError


def s3_buckets(endpoint: str, access: str, secret: str, *buckets: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                          aws_secret_access_key=secret, region_name="us-east-1")
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:
            client.create_bucket(Bucket=bucket)


def ecr_login(endpoint: str, expected: str) -> None:
    client = boto3.client("ecr", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    token = client.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    if (user, password) != ("AWS", expected):
        sys.exit(f"moto's ECR login changed ({user}:{password}); update tools/harnesslib/ecr.py")


if __name__ == "__main__":
    task, *args = sys.argv[1:]
    if task == "s3-buckets":
        s3_buckets(*args)
    elif task == "ecr-login":
        ecr_login(*args)
    else:
        sys.exit(f"unknown task {task!r}")

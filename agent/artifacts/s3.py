"""s3://bucket/key-or-prefix through boto3.

Credentials: keys from the secret (AWS, rclone or Seldon style), else boto3's
default chain (environment keys, IRSA web identity, instance profile). A key
that is not an object is treated as a "directory" prefix and listed
(paginated). The content id of an object is its ETag (+ size). A re-upload of
identical bytes as a multipart upload (or with another part size) changes the
ETag and therefore the model digest: the only cost is a rebuilt image.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from agent.artifacts.credentials import S3Credentials
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import (
    BaseSource,
    ModelFile,
    ResumableStream,
    TransientArtifactError,
    buffered,
)
from agent.artifacts.tls import verify_setting
from agent.errors import ArtifactError
from agent.logs import redact_uri

TRANSIENT_CODES = {"500", "502", "503", "504", "429", "SlowDown", "InternalError",
                   "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "Throttling"}


def parse_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise ArtifactError(f"{redact_uri(uri)}: expected s3://<bucket>/<key or prefix>")
    return parts.netloc, parts.path.lstrip("/")


def make_client(
    settings: ArtifactSettings, creds: S3Credentials | None, uri: str = ""
) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = (
        (creds.endpoint_url if creds else None)
        or settings.s3_endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = (creds.region if creds else None) or settings.s3_region
    if not region and not os.environ.get("AWS_DEFAULT_REGION") and not os.environ.get("AWS_REGION"):
        region = "us-east-1"
    style = settings.s3_addressing_style
    if style is None:
        path_style = creds.path_style if creds and creds.path_style is not None else bool(endpoint)
        style = "path" if path_style else "auto"
    kwargs: dict[str, Any] = {}
    if creds is not None and creds.has_keys and not creds.env_auth:
        kwargs = {
            "aws_access_key_id": creds.access_key_id,
            "aws_secret_access_key": creds.secret_access_key,
            "aws_session_token": creds.session_token,
        }
    verify: bool | str | None = None
    if settings.ca_bundle is not None:
        verify = verify_setting(settings)  # system roots + the configured CAs
    if creds is not None and not creds.verify:
        verify = False
    session = boto3.session.Session(region_name=region, **kwargs)
    config = Config(
        s3={"addressing_style": style},
        signature_version="s3v4",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=settings.timeout_seconds,
        read_timeout=settings.timeout_seconds,
    )
    try:
        return session.client("s3", endpoint_url=endpoint, config=config, verify=verify)
    except Exception as exc:
        raise ArtifactError(f"{uri}: cannot create an S3 client: {type(exc).__name__}") from exc


def classify(exc: BaseException, uri: str) -> ArtifactError:
    """Map a boto3/botocore exception to an ArtifactError that names the URI, never a secret."""
    from botocore import exceptions as bx

    if isinstance(exc, ArtifactError):
        return exc
    uri = redact_uri(uri)
    if isinstance(exc, bx.NoCredentialsError):
        return ArtifactError(
            f"{uri}: no S3 credentials found (give a credentials secret, or configure "
            "IRSA / environment keys for the agent)"
        )
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
        if code in ("NoSuchKey", "404", "NotFound"):
            return ArtifactError(f"{uri}: object not found (check the key or prefix)")
        if code == "NoSuchBucket":
            return ArtifactError(f"{uri}: bucket does not exist (check the bucket name/endpoint)")
        if code == "InvalidAccessKeyId":
            return ArtifactError(
                f"{uri}: the access key id is not known to the store (check the credentials "
                "secret and the endpoint)"
            )
        if code == "SignatureDoesNotMatch":
            return ArtifactError(
                f"{uri}: the secret access key is wrong (check the credentials secret)"
            )
        if code in ("ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
                    "RequestExpired", "InvalidToken"):
            return ArtifactError(
                f"{uri}: the S3 credentials have expired (refresh the session token / secret)"
            )
        if code in ("PermanentRedirect", "301", "AuthorizationHeaderMalformed",
                    "IllegalLocationConstraintException") or status == "301":
            where = headers.get("x-amz-bucket-region") or err.get("Region")
            hint = f" (it is in {where})" if where else ""
            return ArtifactError(
                f"{uri}: the bucket is in another region{hint}; set artifacts.s3_region or "
                "AWS_DEFAULT_REGION in the credentials secret"
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden"):
            return ArtifactError(
                f"{uri}: access denied (check the credentials' permissions, e.g. s3:GetObject "
                "and s3:ListBucket, and the access key id)"
            )
        if code in ("PreconditionFailed", "412"):
            return TransientArtifactError(f"{uri}: the object changed during the download")
        if code in TRANSIENT_CODES or status.startswith("5"):
            return TransientArtifactError(f"{uri}: S3 error {code or status} (transient)")
        return ArtifactError(f"{uri}: S3 error {code or status}")
    transient_types: tuple[type[BaseException], ...] = (
        bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ReadTimeoutError,
        bx.ConnectTimeoutError, bx.IncompleteReadError, bx.ResponseStreamingError,
        ConnectionError, TimeoutError,
    )
    if isinstance(exc, transient_types):
        return TransientArtifactError(f"{uri}: connection problem: {type(exc).__name__}")
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(exc, Urllib3Error):
            return TransientArtifactError(f"{uri}: connection problem: {type(exc).__name__}")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, bx.SSLError):
        return ArtifactError(f"{uri}: TLS verification failed (set artifacts.ca_bundle)")
    if isinstance(exc, bx.BotoCoreError):
        return ArtifactError(f"{uri}: S3 client error: {type(exc).__name__}")
    return ArtifactError(f"{uri}: unexpected error {type(exc).__name__}")


class S3Source(BaseSource):
    def __init__(
        self, uri: str, settings: ArtifactSettings, creds: S3Credentials | None
    ) -> None:
        super().__init__(uri, settings)
        self.bucket, self.key = parse_uri(uri)
        self.client = make_client(settings, creds, self.safe_uri)

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            try:
                return fn(**kwargs)
            except Exception as exc:
                raise classify(exc, self.safe_uri) from exc

        return self.call(once)

    def _file(self, key: str, rel: str, size: int, etag: str) -> ModelFile:
        etag = etag.strip('"')
        return ModelFile(
            rel, size, 0o644, content_id=f"s3-etag:{etag}",
            opener=lambda: self._open(key, size, etag),
        )

    def _open(self, key: str, size: int, etag: str) -> Any:
        def open_at(offset: int) -> Any:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if etag:
                kwargs["IfMatch"] = f'"{etag}"'
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
            return self.client.get_object(**kwargs)["Body"]

        what = f"s3://{self.bucket}/{key}"
        return buffered(ResumableStream(
            what, open_at, size, self.settings, lambda e: classify(e, self.safe_uri), ranges=True
        ))

    def _list(self) -> list[ModelFile]:
        if self.key and not self.key.endswith("/"):
            try:
                head = self._call(self.client.head_object, Bucket=self.bucket, Key=self.key)
            except ArtifactError as exc:
                if "access denied" in str(exc):
                    # HEAD answers carry no error code: ask again with a GET for the reason
                    self._call(self.client.get_object, Bucket=self.bucket, Key=self.key,
                               Range="bytes=0-0")
                if "object not found" not in str(exc):
                    raise
            else:
                self.single = True
                name = self.key.rsplit("/", 1)[-1]
                return [self._file(self.key, name, head["ContentLength"], head.get("ETag", ""))]
        prefix = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        result: list[ModelFile] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix,
                                      "MaxKeys": self.settings.list_page_size}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                key = obj["Key"]
                rel = key[len(prefix):]
                if not rel or key.endswith("/"):
                    continue  # "directory marker" objects
                result.append(self._file(key, rel, obj["Size"], obj.get("ETag", "")))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        if not result:
            raise ArtifactError(
                f"{self.safe_uri}: object not found (no object or prefix with that key)")
        return result

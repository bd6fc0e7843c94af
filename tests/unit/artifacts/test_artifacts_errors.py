"""Error mapping and resumable reads, with fabricated library exceptions (no server can
produce an expired STS token or a cross-region redirect here)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from agent.artifacts import ArtifactSettings
from agent.artifacts.s3 import classify
from agent.artifacts.source import ResumableStream, TransientArtifactError
from agent.errors import ArtifactError

URI = "s3://bucket/model"


def _client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "secret-ish text"},
                        "ResponseMetadata": {"HTTPStatusCode": status,
                                             "HTTPHeaders": headers or {}}}, "GetObject")


@pytest.mark.parametrize(("code", "status", "expected", "transient"), [
    ("NoSuchKey", 404, "object not found", False),
    ("NoSuchBucket", 404, "bucket does not exist", False),
    ("InvalidAccessKeyId", 403, "access key id is not known", False),
    ("SignatureDoesNotMatch", 403, "secret access key is wrong", False),
    ("ExpiredToken", 400, "have expired", False),
    ("AccessDenied", 403, "access denied", False),
    ("SlowDown", 503, "transient", True),
    ("InternalError", 500, "transient", True),
])
def test_s3_error_mapping(code: str, status: int, expected: str, transient: bool) -> None:
    err = classify(_client_error(code, status), URI)
    assert URI in str(err) and expected in str(err)
    assert err.transient is transient
    assert "secret-ish" not in str(err)


def test_s3_region_redirect_names_the_region() -> None:
    err = classify(_client_error("PermanentRedirect", 301,
                                 {"x-amz-bucket-region": "eu-central-1"}), URI)
    assert "another region" in str(err) and "eu-central-1" in str(err)
    err = classify(_client_error("301", 301, {"x-amz-bucket-region": "ap-south-1"}), URI)
    assert "ap-south-1" in str(err)


def test_s3_connection_errors_are_transient() -> None:
    err = classify(EndpointConnectionError(endpoint_url="http://x"), URI)
    assert isinstance(err, TransientArtifactError)


class Flaky:
    """Opens at an offset; the first body breaks after `cut` bytes."""

    def __init__(self, data: bytes, cut: int | None, ranges: bool = True) -> None:
        self.data, self.cut, self.opens = data, cut, []  # type: ignore[var-annotated]
        self.ranges = ranges

    def open_at(self, offset: int) -> Any:
        self.opens.append(offset)
        start = offset if self.ranges else 0
        body = io.BytesIO(self.data[start:])
        if self.cut is not None:
            cut, self.cut = self.cut, None
            return _Breaking(body, cut - start)
        return body


class _Breaking:
    def __init__(self, inner: io.BytesIO, limit: int) -> None:
        self.inner, self.left = inner, limit

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            raise ConnectionResetError("peer reset")
        data = self.inner.read(min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        pass


def _classify(exc: BaseException) -> ArtifactError:
    return TransientArtifactError(f"x: {type(exc).__name__}")


def test_resume_at_offset() -> None:
    data = bytes(range(256)) * 100
    flaky = Flaky(data, cut=5000)
    stream = ResumableStream("x", flaky.open_at, len(data), ArtifactSettings(), _classify)
    assert stream.read() == data
    assert flaky.opens == [0, 5000]


def test_restart_without_ranges_skips_delivered_bytes() -> None:
    data = bytes(range(256)) * 100
    flaky = Flaky(data, cut=7000, ranges=False)
    stream = ResumableStream("x", flaky.open_at, len(data), ArtifactSettings(), _classify,
                             ranges=False)
    assert stream.read() == data
    assert flaky.opens == [0, 0]


def test_truncated_body_counts_as_broken_and_gives_up() -> None:
    def short(offset: int) -> Any:
        return io.BytesIO(b"abc" if offset == 0 else b"")  # then no progress at all

    stream = ResumableStream("x", short, 10, ArtifactSettings(retries=1), _classify)
    with pytest.raises(ArtifactError, match="transfer ended"):
        stream.read()


def test_permanent_error_is_not_retried() -> None:
    calls = []

    def denied(offset: int) -> Any:
        calls.append(offset)
        raise ArtifactError("x: access denied")

    stream = ResumableStream("x", denied, 10, ArtifactSettings(), _classify)
    with pytest.raises(ArtifactError, match="access denied"):
        stream.read()
    assert calls == [0]

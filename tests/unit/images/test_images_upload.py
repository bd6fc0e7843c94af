"""BlobUpload bookkeeping that needs no server: chunk sizing and Location handling."""

from __future__ import annotations

import pytest
import requests

from agent.errors import RegistryError
from agent.images.registry import BlobUpload, Registry
from agent.images.settings import ImageSettings


def _response(**headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 202
    response.headers.update(headers)
    return response


def test_chunk_size_respects_oci_chunk_min_length() -> None:
    registry = Registry("r.io", ImageSettings(chunk_size_bytes=64 * 1024))
    upload = BlobUpload(registry, "m", _response(**{
        "Location": "/v2/m/blobs/uploads/1?_state=x", "OCI-Chunk-Min-Length": "10485760"}))
    assert upload.chunk_size == 10 * 1024 * 1024
    assert upload.location == "https://r.io/v2/m/blobs/uploads/1?_state=x"
    small = BlobUpload(registry, "m", _response(Location="https://other/u/2"))
    assert small.chunk_size == 64 * 1024 and small.location == "https://other/u/2"


def test_digest_of_buffered_bytes_without_sending() -> None:
    registry = Registry("r.io", ImageSettings())
    upload = BlobUpload(registry, "m", _response(Location="/u"))
    upload.write(b"abc")
    assert upload.digest() == \
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_upload_without_location_is_an_error() -> None:
    with pytest.raises(RegistryError, match="without a Location"):
        BlobUpload(Registry("r.io", ImageSettings()), "m", _response())

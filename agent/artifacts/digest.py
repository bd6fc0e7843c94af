"""The model digest: sha256 over a canonical listing of (path, size, content id).

A *content id* is what the store says about one object's bytes without us
reading them (S3 ETag, GCS md5/crc32c, OCI layer digest, http ETag or
Last-Modified) or, where the store says nothing useful, the sha256 of the bytes
(``sha256:<hex>``: local files, http servers without validators). The listing is
sorted by path and framed unambiguously, so the digest depends on the content
identity only: not on the order a store lists objects, not on the URI, not on
when it was fetched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

#: Bumped if the canonical form ever changes (it changes every digest, hence image tags).
DIGEST_VERSION = "management-agent/model-digest/v1"
CHUNK = 1024 * 1024


def listing_digest(entries: Iterable[tuple[str, int, str]]) -> str:
    """``sha256:<hex>`` over the sorted (path, size, content id) triples."""
    h = hashlib.sha256()
    h.update(DIGEST_VERSION.encode() + b"\n")
    for path, size, content_id in sorted(entries, key=lambda e: e[0].encode("utf-8")):
        for part in (path, str(size), content_id):
            if "\0" in part or "\n" in part:
                raise ValueError(f"invalid character in digest listing entry {path!r}")
        h.update(f"{path}\0{size}\0{content_id}\n".encode())
    return "sha256:" + h.hexdigest()


def stream_sha256(stream: BinaryIO) -> tuple[str, int]:
    """(``sha256:<hex>``, size) of a stream, read in chunks."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def file_sha256(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    with path.open("rb") as stream:
        return stream_sha256(stream)[0]


def normalize(digest: str) -> str:
    """Accept ``sha256:<hex>`` or a bare 64-hex string; lower-case it."""
    value = digest.strip().lower()
    if not value.startswith("sha256:"):
        value = "sha256:" + value
    hexpart = value.removeprefix("sha256:")
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return value

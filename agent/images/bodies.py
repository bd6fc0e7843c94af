"""What the registry client reads: bodies capped while they stream, digests checked.

A deployment may name any registry (`model.image`, an `oci://` model, a server
profile's base image), so nothing it sends is trusted with the agent's memory or
taken for content it does not hash to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import requests

from agent.errors import RegistryError

#: what a registry may send for a manifest or an image config: the distribution registry
#: refuses to store a manifest over 4 MiB, and a config is a few KiB; anything larger is
#: refused while it streams, so a hostile registry cannot fill the agent's memory
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024


#: how much of an error answer is read for its message: a hostile registry's endless
#: 4xx/5xx body is cut here, like a 200 body at its cap
MAX_ERROR_BYTES = 64 * 1024


def read_capped(response: requests.Response, limit: int, what: str) -> bytes:
    body = bytearray()
    with response:
        for chunk in response.iter_content(64 * 1024):
            body += chunk
            if len(body) > limit:
                raise RegistryError(f"{what}: larger than {limit // (1024 * 1024)} MiB, refused")
    return bytes(body)


def small_body(response: requests.Response) -> bytes:
    """At most MAX_ERROR_BYTES of `response`'s body; the connection is released after."""
    body = b""
    try:
        for chunk in response.iter_content(8192):
            body += chunk
            if len(body) >= MAX_ERROR_BYTES:
                break
    except (requests.RequestException, RuntimeError):  # cut short, or read already
        pass
    finally:
        response.close()
    return body[:MAX_ERROR_BYTES]


def check_digest(data: bytes, digest: str, what: str) -> None:
    """`data` must hash to `digest` (sha256 or sha512, the algorithms OCI registers)."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise RegistryError(f"{what}: digest algorithm {algorithm!r} is not supported "
                            "(sha256, sha512)")
    if hashlib.new(algorithm, data).hexdigest() != expected:
        raise RegistryError(f"{what} does not match its digest")


def verified(chunks: Iterable[bytes], digest: str, source: str) -> Iterator[bytes]:
    """`chunks`, passed through; raises at the end when their sha256 is not `digest`
    (consume them all: a reader that stops early checks nothing)."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk
    if "sha256:" + hasher.hexdigest() != digest:
        raise RegistryError(f"blob {digest} from {source} is corrupt")

"""Model artifacts: open a model URI as a stream of files plus a content digest.

    with open_model("s3://bucket/models/iris/", settings.artifacts, creds) as src:
        src.digest          # "sha256:...", known before reading bytes where possible
        for f in src.files():   # sorted by path
            with f.open() as stream: ...

    digest = fetch_model(uri, Path("/mnt/models"), settings.artifacts, creds,
                         expected_digest="sha256:...")

Schemes: s3://, gs://, http(s)://, oci://, file://, pvc://, models:/ (MLflow).
See docs/artifacts.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import urlsplit

from agent.artifacts.credentials import Credentials, parse_credentials, register_credentials
from agent.artifacts.digest import normalize
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile, ModelSource, is_archive_name
from agent.errors import ArtifactError
from agent.logs import redact_uri

__all__ = ["ArtifactSettings", "ModelFile", "ModelSource", "fetch_model", "open_model"]

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
SCHEMES = ("s3", "gs", "http", "https", "oci", "file", "pvc", "models")


def _open_raw(uri: str, settings: ArtifactSettings, creds: Credentials) -> BaseSource:
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("file", "pvc"):
        from agent.artifacts.local import LocalSource

        return LocalSource(uri, settings)
    if scheme == "s3":
        from agent.artifacts.s3 import S3Source

        return S3Source(uri, settings, creds.s3)
    if scheme == "gs":
        from agent.artifacts.gcs import GcsSource

        return GcsSource(uri, settings, creds.gcs)
    if scheme in ("http", "https"):
        from agent.artifacts.http import HttpSource

        return HttpSource(uri, settings, creds.http)
    if scheme == "oci":
        from agent.artifacts.oci import OciSource

        return OciSource(uri, settings, creds.oci)
    if scheme == "models":
        from agent.artifacts.mlflow import open_registered_model

        return open_registered_model(uri, settings, creds, _open_raw)
    raise ArtifactError(
        f"{redact_uri(uri)}: unknown scheme {scheme!r} (supported: s3, gs, http, https, oci, "
        "file, pvc, models)"
    )


def open_model(
    uri: str,
    settings: ArtifactSettings,
    credentials: Mapping[str, str] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    unpack_archives: bool | None = None,
) -> ModelSource:
    """Open a model URI; a single .tar/.tgz/.zip object is seen as its members.

    `credentials` is the decoded data of a Kubernetes secret in any supported
    format, `annotations` the secret's annotations (Seldon/KServe S3 endpoint).
    """
    register_credentials(credentials)  # their secret values never reach a log line
    creds = parse_credentials(credentials, annotations)
    source = _open_raw(uri, settings, creds)
    try:
        entries = source.entries()
        unpack = settings.unpack_archives if unpack_archives is None else unpack_archives
        if unpack and source.single and len(entries) == 1 and is_archive_name(entries[0].path):
            from agent.artifacts.archive import ArchiveSource

            return ArchiveSource(source)
    except BaseException:
        source.close()
        raise
    return source


def _write(f: ModelFile, target: Path, uri: str) -> None:
    """Write one file; `uri` is the redacted URI messages show."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    check = hashlib.new(f.checksum[0]) if f.checksum else None
    written = 0
    with os.fdopen(fd, "wb") as out, f.open() as src:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if check is not None:
                check.update(chunk)
            out.write(chunk)
    if written != f.size:
        raise ArtifactError(f"{uri}: {f.path}: received {written} bytes, expected {f.size}")
    if check is not None and f.checksum and check.hexdigest() != f.checksum[1]:
        raise ArtifactError(f"{uri}: {f.path}: content does not match the store's checksum")
    os.chmod(target, f.mode)


def _write_all(files: list[ModelFile], root: Path, uri: str, workers: int) -> None:
    """Download files in parallel (bounded); the first failure cancels the rest."""
    if workers <= 1 or len(files) <= 1:
        for f in files:
            _write(f, root.joinpath(*f.path.split("/")), uri)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, len(files)),
                              thread_name_prefix="fetch-model")
    try:
        futures = [pool.submit(_write, f, root.joinpath(*f.path.split("/")), uri) for f in files]
        for future in as_completed(futures):
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _install(staged: Path, dest: Path, staging: Path, existed: bool) -> None:
    """Put the staged tree at dest: one rename when dest is new, else entry by entry."""
    if not existed:
        os.rename(staged, dest)
        return
    old = staging / "old"
    old.mkdir()
    for child in dest.iterdir():
        if child != staging:
            os.rename(child, old / child.name)
    for child in staged.iterdir():
        os.rename(child, dest / child.name)


def fetch_model(
    uri: str,
    dest: Path,
    settings: ArtifactSettings,
    credentials: Mapping[str, str] | None = None,
    expected_digest: str | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    unpack: bool | None = None,
) -> str:
    """Download the model into dest (created or replaced) atomically; return its digest.

    Files go to a staging directory next to (or, when dest exists - e.g. a
    mounted emptyDir - inside) dest and are moved into place only when all of
    them arrived and the digest matched; a failure leaves dest as it was.
    """
    dest = Path(dest)
    shown = redact_uri(uri)
    want = None
    if expected_digest:
        try:
            want = normalize(expected_digest)
        except ValueError as exc:
            raise ArtifactError(f"{shown}: {exc}") from exc
    unpack = settings.unpack_archives if unpack is None else unpack
    existed = dest.is_dir()
    if dest.exists() and not existed:
        raise ArtifactError(f"{shown}: destination {dest} exists and is not a directory")
    with open_model(uri, settings, credentials, annotations=annotations,
                    unpack_archives=unpack) as source:
        digest = source.digest
        if want and digest != want:
            raise ArtifactError(
                f"{shown}: digest mismatch: expected {want}, the store has {digest} "
                "(the model changed since it was registered?)"
            )
        parent = dest if existed else dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{dest.name}.fetch-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            staged = staging / "model"
            from agent.artifacts.archive import ArchiveSource

            if isinstance(source, ArchiveSource):
                source.extract_to(staged, scratch=staging)
            else:
                staged.mkdir()
                _write_all(list(source.files()), staged, shown, settings.download_workers)
            final = source.digest
            if final != digest or (want and final != want):
                raise ArtifactError(f"{shown}: the model changed during the download; retry")
            _install(staged, dest, staging, existed)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s into %s (%s)", shown, dest, digest)
    return digest

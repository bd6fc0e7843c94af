"""models:/name/version, models:/name@alias, models:/name/<stage|latest>, models:/m-<id>.

Resolution through the MLflow REST API: the model version (by number, alias or
latest in a stage), then `model-versions/get-download-uri` (MLflow 3 sources
are `models:/m-<id>` logged models; `logged-models/<id>` is used for those).
An `mlflow-artifacts:` location is read through the tracking server's artifact
proxy (`/api/2.0/mlflow-artifacts/artifacts`); any other location (s3://,
gs://, http(s)://, file://) is opened directly with the same credentials, so
the digest is the store's own (ETags, md5...). Through the proxy, which gives
no content hashes, a file's content id is its immutable artifact location plus
its size: logged artifacts never change, so the digest is stable across
re-fetches; the same bytes logged twice give two digests (a rebuilt image, no
harm).

Tracking URI: settings.mlflow_tracking_uri, else MLFLOW_TRACKING_URI. Auth:
MLFLOW_TRACKING_TOKEN (bearer) or MLFLOW_TRACKING_USERNAME/PASSWORD (basic),
from the credentials secret first, else the environment.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests

from agent.artifacts.credentials import Credentials, MlflowCredentials
from agent.artifacts.egress import EgressPolicy, guarded_session
from agent.artifacts.http import classify, status_error, verify_setting
from agent.artifacts.settings import ArtifactSettings
from agent.artifacts.source import BaseSource, ModelFile, ResumableStream, buffered
from agent.errors import ArtifactError
from agent.logs import redact_uri

OpenRaw = Callable[[str, ArtifactSettings, Credentials], BaseSource]


class Tracking:
    """A tiny MLflow REST client: base URL, auth, verify, retries, error mapping."""

    def __init__(self, uri: str, settings: ArtifactSettings, creds: MlflowCredentials | None):
        self.uri = uri
        self.safe_uri = redact_uri(uri)
        self.settings = settings
        base = settings.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not base or not base.startswith(("http://", "https://")):
            raise ArtifactError(
                f"{redact_uri(uri)}: no MLflow tracking server configured (set "
                "artifacts.mlflow_tracking_uri "
                "or MLFLOW_TRACKING_URI to its http(s) URL)"
            )
        self.base = base.rstrip("/")
        EgressPolicy.of(settings).check_url(self.base, f"{self.safe_uri}: MLflow tracking server")
        self.session = guarded_session(settings)
        token = creds.token if creds else os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = creds.username if creds else os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = creds.password if creds else os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user:
            self.session.auth = (user, password or "")

    def get(self, path: str, params: dict[str, str] | None = None, stream: bool = False,
            headers: dict[str, str] | None = None) -> requests.Response:
        try:
            resp = self.session.get(
                self.base + path, params=params, stream=stream, headers=headers,
                timeout=self.settings.timeout_seconds, verify=verify_setting(self.settings),
            )
        except Exception as exc:
            raise classify(exc, self.safe_uri) from exc
        if resp.status_code >= 400:
            detail = ""
            if not stream:
                try:
                    body = resp.json()
                    detail = f": {body.get('error_code', '')} {body.get('message', '')}".rstrip()
                except ValueError:
                    detail = ""
            resp.close()
            if resp.status_code == 404 or "RESOURCE_DOES_NOT_EXIST" in detail:
                raise ArtifactError(f"{self.safe_uri}: not found in the MLflow registry{detail}")
            if resp.status_code in (401, 403):
                raise ArtifactError(
                    f"{self.safe_uri}: the MLflow server refused access (HTTP {resp.status_code}; "
                    "check MLFLOW_TRACKING_TOKEN or USERNAME/PASSWORD)"
                )
            err = status_error(resp.status_code, self.safe_uri, "MLflow server")
            raise type(err)(f"{err}{detail}")
        return resp

    def json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            resp = self.get(path, params)
            try:
                data = resp.json()
            except ValueError as exc:
                raise ArtifactError(
                    f"{self.safe_uri}: the MLflow server answered non-JSON") from exc
            return data if isinstance(data, dict) else {}

        from agent.artifacts.source import call_with_retries

        return call_with_retries(self.settings, once)


def parse(uri: str) -> tuple[str, str, str]:
    """(kind, name, ref): kind is version | alias | stage | logged."""
    if not uri.startswith("models:/"):
        raise ArtifactError(
            f"{redact_uri(uri)}: expected models:/<name>/<version>, models:/<name>@<alias>")
    rest = unquote(uri[len("models:/"):].lstrip("/"))
    if "/" not in rest and "@" not in rest and rest.startswith("m-"):
        return "logged", rest, ""
    if "@" in rest and "/" not in rest.split("@", 1)[1]:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return "alias", name, alias
    if "/" in rest:
        name, ref = rest.rsplit("/", 1)
        if name and ref:
            return ("version" if ref.isdigit() else "stage"), name, ref
    raise ArtifactError(
        f"{redact_uri(uri)}: expected models:/<name>/<version>, models:/<name>@<alias>, "
        "models:/<name>/<stage|latest> or models:/m-<id>"
    )


def resolve(uri: str, tracking: Tracking) -> tuple[str, str]:
    """(artifact location, description of what was resolved)."""
    kind, name, ref = parse(uri)
    if kind == "logged":
        info = tracking.json(f"/api/2.0/mlflow/logged-models/{quote(name, safe='')}", {})
        location = info.get("model", {}).get("info", {}).get("artifact_uri")
        if not location:
            raise ArtifactError(
                f"{redact_uri(uri)}: the MLflow server returned no artifact location")
        return str(location), f"logged model {name}"
    if kind == "alias":
        version = tracking.json("/api/2.0/mlflow/registered-models/alias",
                                {"name": name, "alias": ref}).get("model_version", {})
    elif kind == "version":
        version = tracking.json("/api/2.0/mlflow/model-versions/get",
                                {"name": name, "version": ref}).get("model_version", {})
    else:
        params = {"name": name}
        if ref.lower() != "latest":
            params["stages"] = ref
        versions = tracking.json("/api/2.0/mlflow/registered-models/get-latest-versions",
                                 params).get("model_versions", [])
        if not versions:
            raise ArtifactError(f"{redact_uri(uri)}: no version of {name!r} in stage {ref!r}")
        version = max(versions, key=lambda v: int(v.get("version", 0)))
    number = str(version.get("version", ""))
    if not number:
        raise ArtifactError(f"{redact_uri(uri)}: the MLflow server returned no model version")
    try:
        location = tracking.json("/api/2.0/mlflow/model-versions/get-download-uri",
                                 {"name": name, "version": number}).get("artifact_uri")
    except ArtifactError:
        location = None
    location = location or version.get("source")
    if not location:
        raise ArtifactError(f"{redact_uri(uri)}: model version {number} has no source")
    if str(location).startswith("models:/m-"):
        return resolve(str(location), tracking)
    return str(location), f"{name} version {number}"


class MlflowProxySource(BaseSource):
    """Files under an `mlflow-artifacts:` location, through the tracking server's proxy."""

    def __init__(self, uri: str, settings: ArtifactSettings, tracking: Tracking,
                 location: str) -> None:
        super().__init__(uri, settings)
        self.tracking = tracking
        self._stack.callback(tracking.session.close)
        self.location = location
        self.root = urlsplit(location).path.strip("/")

    def _url(self, path: str) -> str:
        return "/api/2.0/mlflow-artifacts/artifacts/" + quote(path)

    def _list_dir(self, path: str) -> list[dict[str, Any]]:
        data = self.tracking.json("/api/2.0/mlflow-artifacts/artifacts", {"path": path})
        return list(data.get("files", []))

    def _list(self) -> list[ModelFile]:
        result: list[ModelFile] = []
        pending = [""]
        while pending:
            rel_dir = pending.pop()
            full_dir = posixpath.join(self.root, rel_dir) if rel_dir else self.root
            for entry in self._list_dir(full_dir):
                name = str(entry.get("path", ""))
                if name.startswith(full_dir + "/"):
                    name = name[len(full_dir) + 1:]
                rel = posixpath.join(rel_dir, name) if rel_dir else name
                if entry.get("is_dir"):
                    pending.append(rel)
                    continue
                size = int(entry.get("file_size") or 0)
                result.append(ModelFile(
                    rel, size, 0o644, content_id=f"mlflow-artifact:{self.location}/{rel}",
                    opener=self._opener(posixpath.join(self.root, rel), size),
                ))
        if not result:
            raise ArtifactError(f"{self.safe_uri}: the model's artifact location "
                                f"{redact_uri(self.location)} "
                                "is empty")
        return result

    def _opener(self, path: str, size: int) -> Callable[[], Any]:
        return lambda: self._open(path, size)

    def _open(self, path: str, size: int) -> Any:
        def open_at(offset: int) -> Any:
            headers = {"Range": f"bytes={offset}-"} if offset else None
            resp = self.tracking.get(self._url(path), stream=True, headers=headers)
            return _Raw(resp)

        return buffered(ResumableStream(
            f"{self.safe_uri} ({path})", open_at, size, self.settings,
            lambda e: classify(e, self.safe_uri), ranges=False,
        ))


class _Raw:
    def __init__(self, resp: requests.Response) -> None:
        self.resp = resp

    def read(self, n: int) -> bytes:
        return bytes(self.resp.raw.read(n))

    def close(self) -> None:
        self.resp.close()


def open_registered_model(uri: str, settings: ArtifactSettings, creds: Credentials,
                          open_raw: OpenRaw) -> BaseSource:
    tracking = Tracking(uri, settings, creds.mlflow)
    location, what = resolve(uri, tracking)
    scheme = urlsplit(location).scheme
    if scheme == "mlflow-artifacts":
        return MlflowProxySource(uri, settings, tracking, location)
    tracking.session.close()
    if scheme in ("", "file") and not location.startswith("file:"):
        location = "file://" + location
    if scheme in ("dbfs", "runs", "wasbs", "abfss", "hdfs", "ftp", "sftp"):
        raise ArtifactError(f"{redact_uri(uri)}: {what} is stored at {redact_uri(location)}, "
                            "a scheme the agent cannot read; serve artifacts through the "
                            "tracking server (mlflow server --serve-artifacts)")
    try:
        source = open_raw(location, settings, creds)
        source.entries()
    except ArtifactError as exc:
        raise type(exc)(f"{redact_uri(uri)} ({what} at {redact_uri(location)}): {exc}") from exc
    return source

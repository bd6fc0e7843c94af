"""Typed credentials parsed from the decoded `data` of a Kubernetes secret.

Accepted formats (several may coexist in one secret):

- AWS style: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
  AWS_ENDPOINT_URL (or S3_ENDPOINT / S3_ENDPOINT_URL), AWS_DEFAULT_REGION /
  AWS_REGION, USE_SSL ("0"/"false" -> http for an endpoint given without scheme).
- rclone style: RCLONE_CONFIG_<REMOTE>_TYPE=s3 with _PROVIDER, _ACCESS_KEY_ID,
  _SECRET_ACCESS_KEY, _SESSION_TOKEN, _ENDPOINT, _ENV_AUTH, _REGION (remote "S3"
  preferred, else the first s3 remote).
- Seldon style: awsAccessKeyID / awsSecretAccessKey (+ awsSessionToken), with the
  endpoint from the secret's annotations `machinelearning.seldon.io/s3-endpoint`
  and `machinelearning.seldon.io/s3-usehttps` (KServe's `serving.kserve.io/...`
  annotations are read the same way), passed as the optional second mapping.
- GCS: `gcs-key.json`, `GOOGLE_APPLICATION_CREDENTIALS_JSON`, `service-account.json`,
  `key.json` (a service-account key JSON).
- HTTP: `token` / `bearer` (a bearer token) or `Authorization` (a full header value).
- MLflow: MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
- OCI registries: `.dockerconfigjson` / `config.json` (docker config), or
  `username` / `password`.

Values never appear in `repr()` or error messages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ArtifactError

TRUE = {"1", "true", "yes", "on"}
ANNOTATION_PREFIXES = ("machinelearning.seldon.io/", "serving.kserve.io/")


def _flag(value: str | None, default: bool = True) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in TRUE


def _endpoint(value: str | None, use_ssl: bool = True) -> str | None:
    if not value:
        return None
    value = value.strip()
    if "://" not in value:
        value = ("https://" if use_ssl else "http://") + value
    return value.rstrip("/")


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    region: str | None = None
    #: use boto3's default chain (env, IRSA web identity, instance profile) instead of keys
    env_auth: bool = False
    path_style: bool | None = None
    verify: bool = True
    source: str = "aws"  # which format they came from: aws | rclone | seldon

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)


@dataclass(frozen=True)
class GcsCredentials:
    service_account_info: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class HttpCredentials:
    authorization: str = field(repr=False)  # full header value, e.g. "Bearer abc"


@dataclass(frozen=True)
class MlflowCredentials:
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class OciCredentials:
    #: registry host -> (username, password)
    auths: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def for_registry(self, host: str) -> tuple[str, str] | None:
        for key, value in self.auths.items():
            bare = key.split("://", 1)[-1].split("/", 1)[0]
            if bare == host:
                return value
        if self.username and self.password is not None:
            return self.username, self.password
        return None


@dataclass(frozen=True)
class Credentials:
    s3: S3Credentials | None = None
    gcs: GcsCredentials | None = None
    http: HttpCredentials | None = None
    mlflow: MlflowCredentials | None = None
    oci: OciCredentials | None = None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _aws(data: Mapping[str, str]) -> S3Credentials | None:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "S3_ENDPOINT",
            "S3_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")
    if not any(k in data for k in keys):
        return None
    use_ssl = _flag(data.get("USE_SSL") or data.get("S3_USE_HTTPS"), True)
    endpoint = (
        data.get("AWS_ENDPOINT_URL") or data.get("S3_ENDPOINT_URL") or data.get("S3_ENDPOINT")
    )
    return S3Credentials(
        access_key_id=data.get("AWS_ACCESS_KEY_ID"),
        secret_access_key=data.get("AWS_SECRET_ACCESS_KEY"),
        session_token=data.get("AWS_SESSION_TOKEN"),
        endpoint_url=_endpoint(endpoint, use_ssl),
        region=data.get("AWS_DEFAULT_REGION") or data.get("AWS_REGION"),
        verify=_flag(data.get("S3_VERIFY_SSL"), True),
        source="aws",
    )


def rclone_remotes(data: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """RCLONE_CONFIG_<REMOTE>_<KEY> entries grouped by remote (upper-case names)."""
    remotes: dict[str, dict[str, str]] = {}
    for key in data:
        if key.startswith("RCLONE_CONFIG_") and key.endswith("_TYPE"):
            remotes[key[len("RCLONE_CONFIG_"):-len("_TYPE")]] = {}
    for remote in remotes:
        prefix = f"RCLONE_CONFIG_{remote}_"
        for key, value in data.items():
            if key.startswith(prefix):
                remotes[remote][key[len(prefix):]] = value
    return remotes


def _rclone(data: Mapping[str, str]) -> S3Credentials | None:
    remotes = {n: r for n, r in rclone_remotes(data).items() if r.get("TYPE", "").lower() == "s3"}
    if not remotes:
        return None
    name = "S3" if "S3" in remotes else sorted(remotes)[0]
    remote = remotes[name]
    provider = remote.get("PROVIDER", "AWS")
    endpoint = _endpoint(remote.get("ENDPOINT"), True)
    return S3Credentials(
        access_key_id=remote.get("ACCESS_KEY_ID"),
        secret_access_key=remote.get("SECRET_ACCESS_KEY"),
        session_token=remote.get("SESSION_TOKEN"),
        endpoint_url=endpoint,
        region=remote.get("REGION") or None,
        env_auth=_flag(remote.get("ENV_AUTH"), False),
        path_style=None if provider.upper() == "AWS" and not endpoint else True,
        source="rclone",
    )


def _seldon(data: Mapping[str, str], annotations: Mapping[str, str]) -> S3Credentials | None:
    if "awsAccessKeyID" not in data and "awsSecretAccessKey" not in data:
        return None

    def note(name: str) -> str | None:
        for prefix in ANNOTATION_PREFIXES:
            if prefix + name in annotations:
                return annotations[prefix + name]
        return None

    use_ssl = _flag(note("s3-usehttps"), True)
    return S3Credentials(
        access_key_id=data.get("awsAccessKeyID"),
        secret_access_key=data.get("awsSecretAccessKey"),
        session_token=data.get("awsSessionToken"),
        endpoint_url=_endpoint(note("s3-endpoint"), use_ssl),
        region=note("s3-region"),
        verify=_flag(note("s3-verifyssl"), True),
        source="seldon",
    )


def _gcs(data: Mapping[str, str]) -> GcsCredentials | None:
    for key in ("gcs-key.json", "GOOGLE_APPLICATION_CREDENTIALS_JSON", "service-account.json",
                "key.json"):
        if key in data:
            try:
                info = json.loads(data[key])
            except ValueError as exc:
                raise ArtifactError(f"credentials key {key!r} is not valid JSON") from exc
            if not isinstance(info, dict):
                raise ArtifactError(f"credentials key {key!r} is not a JSON object")
            return GcsCredentials(info)
    return None


def _http(data: Mapping[str, str]) -> HttpCredentials | None:
    if data.get("Authorization"):
        return HttpCredentials(data["Authorization"].strip())
    for key in ("token", "bearer", "TOKEN", "BEARER_TOKEN"):
        if data.get(key):
            return HttpCredentials("Bearer " + data[key].strip())
    return None


def _mlflow(data: Mapping[str, str]) -> MlflowCredentials | None:
    token = data.get("MLFLOW_TRACKING_TOKEN")
    user = data.get("MLFLOW_TRACKING_USERNAME")
    if not token and not user:
        return None
    return MlflowCredentials(token, user, data.get("MLFLOW_TRACKING_PASSWORD"))


def _oci(data: Mapping[str, str]) -> OciCredentials | None:
    auths: dict[str, tuple[str, str]] = {}
    for key in (".dockerconfigjson", "config.json", ".dockercfg"):
        if key not in data:
            continue
        try:
            doc = json.loads(data[key])
        except ValueError as exc:
            raise ArtifactError(f"credentials key {key!r} is not valid JSON") from exc
        entries = doc.get("auths", doc) if isinstance(doc, dict) else {}
        for host, entry in entries.items():
            if not isinstance(entry, dict):
                continue
            user, password = entry.get("username"), entry.get("password")
            if entry.get("auth"):
                decoded = base64.b64decode(entry["auth"]).decode("utf-8")
                user, _, password = decoded.partition(":")
            if user is not None and password is not None:
                auths[host] = (user, password)
    user = data.get("username")
    if not auths and not user:
        return None
    return OciCredentials(auths, user, data.get("password"))


def parse_credentials(
    data: Mapping[str, Any] | None, annotations: Mapping[str, str] | None = None
) -> Credentials:
    """Everything usable in a secret's decoded data (+ its annotations)."""
    if not data:
        return Credentials()
    text = {str(k): _text(v) for k, v in data.items()}
    s3 = _aws(text)
    # AWS keys win when several formats are present; other formats fill the gaps
    for alt in (_rclone(text), _seldon(text, annotations or {})):
        if alt is None:
            continue
        if s3 is None or not s3.has_keys:
            s3 = alt if s3 is None else S3Credentials(
                alt.access_key_id, alt.secret_access_key, alt.session_token,
                s3.endpoint_url or alt.endpoint_url, s3.region or alt.region, alt.env_auth,
                alt.path_style, s3.verify and alt.verify, alt.source,
            )
    return Credentials(
        s3=s3, gcs=_gcs(text), http=_http(text), mlflow=_mlflow(text), oci=_oci(text)
    )


def read_credentials_dir(path: Any) -> dict[str, str]:
    """A mounted secret (one file per key) as a mapping; dot-dirs of the mount are skipped."""
    from pathlib import Path

    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"credentials directory {root} does not exist")
    data: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("..") or not entry.is_file():
            continue
        data[entry.name] = entry.read_text()
    return data

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
- HTTP: `token` / `bearer` (a bearer token) or `Authorization` (a full header value),
  bound to the endpoint named by `host` (see below).
- MLflow: MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
- OCI registries: `.dockerconfigjson` / `config.json` (docker config: one login per
  registry), or `username` / `password` bound to the registry named by `host`.

Endpoint binding: a deployment chooses its model URI, so a token or password is
sent only to the endpoint the Secret's owner named in its `host` key (also
`endpoint`): comma-separated `host`, `host:port` or `https://host[:port]` (a
scheme given must match too; without a port any port of that host matches).
A token without `host` is never sent: the fetch is refused with a message that
says what to add. S3 and GCS keys go only to the endpoint configured in the
Secret or the settings, never to a host taken from the URI.

Values never appear in `repr()` or error messages; `credential_values` lists
the ones the log scrubber must know.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.artifacts.binding import Binding, refuse_unbound
from agent.errors import ArtifactError

TRUE = {"1", "true", "yes", "on"}
HTTP_TOKEN_KEYS = ("token", "bearer", "TOKEN", "BEARER_TOKEN")
#: keys whose values are credentials (scrubbed from logs); everything else in a Secret
#: (endpoints, regions, flags, usernames) is configuration and stays readable
SECRET_KEYS = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken",
    "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "password", "Authorization",
    *HTTP_TOKEN_KEYS,
})
RCLONE_SECRET_SUFFIXES = ("_ACCESS_KEY_ID", "_SECRET_ACCESS_KEY", "_SESSION_TOKEN")
GCS_KEYS = ("gcs-key.json", "GOOGLE_APPLICATION_CREDENTIALS_JSON", "service-account.json",
            "key.json")
DOCKER_KEYS = (".dockerconfigjson", "config.json", ".dockercfg")
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
    binding: Binding = field(default_factory=Binding)


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
    binding: Binding = field(default_factory=Binding)

    def for_registry(self, host: str, what: str = "") -> tuple[str, str] | None:
        """The login for `host` (host[:port]); a bare username/password only for its `host`."""
        for key, value in self.auths.items():
            bare = key.split("://", 1)[-1].split("/", 1)[0]
            if bare.lower() == host.lower():
                return value
        if self.username and self.password is not None:
            name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
            if self.binding.allows(None, name or host, int(port) if port.isdigit() else None):
                return self.username, self.password
            raise refuse_unbound(what or host, host, self.binding, "registry password")
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
    for key in GCS_KEYS:
        if key in data:
            try:
                info = json.loads(data[key])
            except ValueError as exc:
                raise ArtifactError(f"credentials key {key!r} is not valid JSON") from exc
            if not isinstance(info, dict):
                raise ArtifactError(f"credentials key {key!r} is not a JSON object")
            return GcsCredentials(info)
    return None


def _binding(data: Mapping[str, str]) -> Binding:
    return Binding.parse(data.get("host") or data.get("endpoint"))


def _http(data: Mapping[str, str]) -> HttpCredentials | None:
    if data.get("Authorization"):
        return HttpCredentials(data["Authorization"].strip(), _binding(data))
    for key in HTTP_TOKEN_KEYS:
        if data.get(key):
            return HttpCredentials("Bearer " + data[key].strip(), _binding(data))
    return None


def _mlflow(data: Mapping[str, str]) -> MlflowCredentials | None:
    token = data.get("MLFLOW_TRACKING_TOKEN")
    user = data.get("MLFLOW_TRACKING_USERNAME")
    if not token and not user:
        return None
    return MlflowCredentials(token, user, data.get("MLFLOW_TRACKING_PASSWORD"))


def _oci(data: Mapping[str, str]) -> OciCredentials | None:
    auths: dict[str, tuple[str, str]] = {}
    for key in DOCKER_KEYS:
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
    return OciCredentials(auths, user, data.get("password"), _binding(data))


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


def credential_values(data: Mapping[str, Any] | None) -> list[str]:
    """The secret values of a credentials Secret: credential fields only (for the scrubber).

    Endpoints, regions, flags and user names are not secrets; a GCS key contributes its
    private key (and the whole JSON), a docker config its passwords and `auth` strings.
    """
    values: list[str] = []
    for key, raw in (data or {}).items():
        key, value = str(key), _text(raw)
        if key in SECRET_KEYS or (key.startswith("RCLONE_CONFIG_")
                                  and key.endswith(RCLONE_SECRET_SUFFIXES)):
            values.append(value)
            if key == "Authorization" and " " in value.strip():
                values.append(value.strip().split(" ", 1)[1])  # the token after "Bearer "
        elif key in GCS_KEYS or key in DOCKER_KEYS:
            values.append(value)
            values.extend(_json_secrets(value))
    return [v for v in values if v]


def _json_secrets(text: str) -> list[str]:
    try:
        doc = json.loads(text)
    except ValueError:
        return []
    found: list[str] = []
    if not isinstance(doc, dict):
        return found
    for name in ("private_key", "private_key_id", "refresh_token", "client_secret"):
        if isinstance(doc.get(name), str):
            found.append(doc[name])
            found.extend(line for line in doc[name].splitlines() if len(line) >= 16)
    entries = doc.get("auths", doc)
    for entry in (entries.values() if isinstance(entries, dict) else []):
        if isinstance(entry, dict):
            for name in ("password", "auth", "identitytoken", "registrytoken"):
                if isinstance(entry.get(name), str):
                    found.append(entry[name])
            if isinstance(entry.get("auth"), str):
                try:
                    decoded = base64.b64decode(entry["auth"]).decode("utf-8")
                    found.append(decoded.partition(":")[2])
                except (ValueError, UnicodeDecodeError):
                    pass
    return found


def register_credentials(data: Mapping[str, Any] | None) -> None:
    """Scrub a credentials Secret's secret values from every log line from now on."""
    from agent.logs import register_secret

    for value in credential_values(data):
        register_secret(value)


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

"""S3 against real servers (SeaweedFS and moto), with every credential format."""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent.artifacts import ArtifactSettings, fetch_model, open_model
from agent.errors import ArtifactError, UnsafeArchiveError

pytestmark = pytest.mark.integration


def _formats(endpoint: str, key: str, secret: str) -> dict[str, tuple[dict[str, str], dict]]:
    host = endpoint.split("://", 1)[1]
    return {
        "aws": ({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                 "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}, {}),
        "rclone": ({"RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
                    "RCLONE_CONFIG_S3_ACCESS_KEY_ID": key,
                    "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": secret,
                    "RCLONE_CONFIG_S3_ENDPOINT": endpoint, "RCLONE_CONFIG_S3_ENV_AUTH": "false"},
                   {}),
        "seldon": ({"awsAccessKeyID": key, "awsSecretAccessKey": secret},
                   {"machinelearning.seldon.io/s3-endpoint": host,
                    "machinelearning.seldon.io/s3-usehttps": "0"}),
    }


@pytest.fixture(params=["seaweed", "moto"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The session bucket of one server, with this test's objects under a unique prefix
    (`root`, e.g. "t-1a2b3c4d/")."""
    info = dict(request.getfixturevalue(f"{request.param}_bucket"))
    root = f"t-{uuid.uuid4().hex[:8]}/"
    client, bucket = info["client"], info["bucket"]
    client.put_object(Bucket=bucket, Key=f"{root}models/iris/model.pkl", Body=b"pickle" * 1000)
    client.put_object(Bucket=bucket, Key=f"{root}models/iris/sub/conf.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key=f"{root}models/iris-other/x", Body=b"not mine")
    info["root"] = root
    info["base"] = f"s3://{bucket}/{root}"
    return info


@pytest.mark.parametrize("fmt", ["aws", "rclone", "seldon"])
def test_prefix_with_each_credential_format(store: dict[str, Any], fmt: str,
                                            tmp_path: Path) -> None:
    data, notes = _formats(store["endpoint"], store["key"], store["secret"])[fmt]
    uri = f"{store['base']}models/iris"
    with open_model(uri, ArtifactSettings(), data, annotations=notes) as src:
        digest = src.digest
        assert [f.path for f in src.files()] == ["model.pkl", "sub/conf.json"]
    dest = tmp_path / "model"
    assert fetch_model(uri, dest, ArtifactSettings(), data, annotations=notes,
                       expected_digest=digest) == digest
    assert (dest / "model.pkl").read_bytes() == b"pickle" * 1000
    assert (dest / "sub" / "conf.json").read_bytes() == b"{}"
    # stable across re-fetches and trailing slash
    with open_model(uri + "/", ArtifactSettings(), data, annotations=notes) as src:
        assert src.digest == digest


def test_single_object_and_settings_endpoint(store: dict[str, Any], tmp_path: Path) -> None:
    settings = ArtifactSettings(s3_endpoint_url=store["endpoint"])
    creds = {"AWS_ACCESS_KEY_ID": store["key"], "AWS_SECRET_ACCESS_KEY": store["secret"]}
    digest = fetch_model(f"{store['base']}models/iris/model.pkl", tmp_path / "d",
                         settings, creds)
    assert (tmp_path / "d" / "model.pkl").read_bytes() == b"pickle" * 1000
    assert digest.startswith("sha256:")


def test_env_keys_and_endpoint(store: dict[str, Any], tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", store["endpoint"])
    with open_model(f"{store['base']}models/iris", ArtifactSettings()) as src:
        assert len(list(src.files())) == 2


def test_pagination(store: dict[str, Any]) -> None:
    client = store["client"]
    for i in range(7):
        client.put_object(Bucket=store["bucket"], Key=f"{store['root']}many/f{i:04d}", Body=b"x")
    creds = _formats(store["endpoint"], store["key"], store["secret"])["aws"][0]
    with open_model(f"{store['base']}many/", ArtifactSettings(list_page_size=2),
                    creds) as src:
        assert len(list(src.files())) == 7


def test_archive_object_unpacked(store: dict[str, Any], tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model/weights.bin")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"abcd"))
    put = store["client"].put_object
    put(Bucket=store["bucket"], Key=f"{store['root']}a/model.tgz", Body=buf.getvalue())
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    put(Bucket=store["bucket"], Key=f"{store['root']}a/evil.tar", Body=evil.getvalue())
    creds = _formats(store["endpoint"], store["key"], store["secret"])["aws"][0]
    fetch_model(f"{store['base']}a/model.tgz", tmp_path / "d", ArtifactSettings(), creds)
    assert (tmp_path / "d" / "model" / "weights.bin").read_bytes() == b"abcd"
    with pytest.raises(UnsafeArchiveError, match=r"evil"):
        fetch_model(f"{store['base']}a/evil.tar", tmp_path / "e", ArtifactSettings(),
                    creds)
    assert not (tmp_path / "e").exists()


def test_missing_object_and_bucket(store: dict[str, Any]) -> None:
    creds = _formats(store["endpoint"], store["key"], store["secret"])["aws"][0]
    uri = f"{store['base']}models/nope"
    with pytest.raises(ArtifactError, match="not found") as err:
        open_model(uri, ArtifactSettings(), creds)
    assert uri in str(err.value)
    with pytest.raises(ArtifactError, match="bucket does not exist"):
        open_model("s3://no-such-bucket-art/x/", ArtifactSettings(), creds)


def test_wrong_key_names_uri_not_secret(seaweed_bucket: dict[str, Any]) -> None:
    store = seaweed_bucket
    bad = {"AWS_ACCESS_KEY_ID": store["key"],
           "AWS_SECRET_ACCESS_KEY": "wrong-secret-value-123",
           "AWS_ENDPOINT_URL": store["endpoint"]}
    key = f"t-{uuid.uuid4().hex[:8]}/m/x"
    store["client"].put_object(Bucket=store["bucket"], Key=key, Body=b"1")
    uri = f"s3://{store['bucket']}/{key}"
    with pytest.raises(ArtifactError) as err:
        open_model(uri, ArtifactSettings(retries=0), bad)
    message = str(err.value)
    assert uri in message and "secret access key is wrong" in message
    assert "wrong-secret-value-123" not in message
    unknown = dict(bad, AWS_ACCESS_KEY_ID="AKIDUNKNOWN")
    with pytest.raises(ArtifactError, match=r"access key id is not known|access denied") as err:
        open_model(uri, ArtifactSettings(retries=0), unknown)
    assert "wrong-secret-value-123" not in str(err.value)


def test_unreachable_endpoint_is_transient_then_clear(tmp_path: Path) -> None:
    creds = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
             "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    with pytest.raises(ArtifactError, match=r"s3://b/k.*connection problem"):
        open_model("s3://b/k", ArtifactSettings(retries=1, timeout_seconds=2), creds)


def test_irsa_web_identity_through_default_chain(moto_bucket: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys anywhere: boto3's default chain assumes the role with the projected service
    account token (IRSA) at STS (moto's), then reads S3 with the temporary credentials."""
    moto_endpoint, bucket = moto_bucket["endpoint"], moto_bucket["bucket"]
    prefix = f"t-{uuid.uuid4().hex[:8]}/m"
    moto_bucket["client"].put_object(Bucket=bucket, Key=f"{prefix}/model.bin", Body=b"irsa")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/model-reader")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # STS and S3
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fetch_model(f"s3://{bucket}/{prefix}", tmp_path / "d", ArtifactSettings())
    assert (tmp_path / "d" / "model.bin").read_bytes() == b"irsa"


class CuttingProxy:
    """A TCP proxy in front of the S3 server that cuts the first connection whose response
    exceeds `cut` bytes (a transfer dropped mid-body, once)."""

    def __init__(self, upstream: str, cut: int) -> None:
        import socket
        import threading

        host, port = upstream.split("://", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.cut: int | None = cut
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: Any, dst: Any, response: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if response:
                    with self.lock:
                        cut = self.cut
                    if cut is not None and sent + len(data) > cut:
                        with self.lock:
                            self.cut = None
                        dst.sendall(data[: cut - sent])
                        break
                    sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
                sock.close()

    def close(self) -> None:
        self.listener.close()


def test_interrupted_download_resumes(seaweed_bucket: dict[str, Any], tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    import logging

    seaweed, bucket = seaweed_bucket, seaweed_bucket["bucket"]
    key = f"t-{uuid.uuid4().hex[:8]}/big/model.bin"
    body = bytes(range(256)) * 8192  # 2 MiB
    seaweed["client"].put_object(Bucket=bucket, Key=key, Body=body)
    proxy = CuttingProxy(seaweed["endpoint"], cut=700_000)
    caplog.set_level(logging.INFO)
    try:
        creds = {"AWS_ACCESS_KEY_ID": seaweed["key"], "AWS_SECRET_ACCESS_KEY": seaweed["secret"],
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        fetch_model(f"s3://{bucket}/{key}", tmp_path / "d", ArtifactSettings(), creds)
    finally:
        proxy.close()
    assert (tmp_path / "d" / "model.bin").read_bytes() == body
    assert proxy.cut is None
    assert "resuming at byte" in caplog.text


def test_a_presigned_url_is_fetched_although_it_is_signed_for_get_only(
        seaweed_bucket: dict[str, Any], tmp_path: Path) -> None:
    """S3 checks the method against the signature: the HEAD the HTTP source sends first
    gets 403, so it learns size and ETag from a one-byte ranged GET instead."""
    client, bucket = seaweed_bucket["client"], seaweed_bucket["bucket"]
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.json")
        info.size = 2
        archive.addfile(info, io.BytesIO(b"{}"))
    key = f"signed-{uuid.uuid4().hex[:8]}/model.tar.gz"
    client.put_object(Bucket=bucket, Key=key, Body=data.getvalue())
    from botocore.config import Config

    signer = _signing_client(seaweed_bucket, Config(signature_version="s3v4",
                                                    s3={"addressing_style": "path"}))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                        ExpiresIn=600)
    import requests

    assert requests.head(url, timeout=10).status_code == 403  # what made the fetch fail
    with open_model(url, ArtifactSettings()) as src:
        assert [(f.path, f.size) for f in src.files()] == [("model.json", 2)]  # unpacked
    fetch_model(url, tmp_path / "model", ArtifactSettings())
    assert (tmp_path / "model" / "model.json").read_bytes() == b"{}"


def _signing_client(store: dict[str, Any], config: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=store["endpoint"], aws_access_key_id=store["key"],
                        aws_secret_access_key=store["secret"], region_name="us-east-1",
                        config=config)

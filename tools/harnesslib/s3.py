"""SeaweedFS (`weed mini`) as the S3 server, auth on, loopback only, no telemetry."""

from __future__ import annotations

from .base import Server
from .procs import http_answers, port_free

BUCKETS = ("models", "mlflow")
ACCESS_KEY = "harness"
REGION = "us-east-1"
# weed mini opens one port per component; each gets a free port of its own. The admin
# server's grpc port must be admin.port + 10000: its plugin worker dials that one
# whatever -admin.port.grpc says (SeaweedFS 4.48), so both are set to agree.
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
          "filer.port.grpc", "s3.port.grpc", "admin.port")
GRPC_OFFSET = 10000


class SeaweedS3(Server):
    name = "s3"
    timeout = 120.0

    def prepare(self) -> None:
        super().prepare()
        for flag in _PORTS[:-1]:
            self.state.reserve(f"s3:{flag}")
        admin = self.state.reserve("s3:admin.port")
        while admin + GRPC_OFFSET > 65535 or not port_free(admin + GRPC_OFFSET, self.host):
            self.state.data["ports"].pop("s3:admin.port")
            admin = self.state.reserve("s3:admin.port")

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [str(self.layout.venv_bin("weed")), "mini", f"-dir={self.layout.data('s3')}",
                f"-ip={self.host}", f"-ip.bind={self.host}", "-master.telemetry=false",
                "-admin.ui=false", "-webdav=false", f"-s3.port={self.port}", "-s3.port.iceberg=0",
                "-s3.port.lance=0", f"-bucket={','.join(BUCKETS)}"]
        argv += [f"-{flag}={self.state.port(f's3:{flag}')}" for flag in _PORTS]
        argv.append(f"-admin.port.grpc={self.state.port('s3:admin.port') + GRPC_OFFSET}")
        env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        return argv, env

    @property
    def secret_key(self) -> str:
        return self.state.secret("s3-secret-key")

    @property
    def endpoint(self) -> str:
        return f"http://{self.hostport}"

    def ready(self) -> bool:
        # buckets are created on startup: wait until the last one answers (403 without auth)
        filer = f"http://{self.host}:{self.state.port('s3:filer.port')}/"
        return http_answers(f"{self.endpoint}/{BUCKETS[-1]}") and http_answers(filer)

    def after_start(self) -> None:
        self.venv_task("s3-buckets", self.endpoint, ACCESS_KEY, self.secret_key, *BUCKETS)

    def exports(self) -> dict[str, str]:
        return {"HARNESS_S3_ENDPOINT": self.endpoint, "HARNESS_S3_ACCESS_KEY": ACCESS_KEY,
                "HARNESS_S3_SECRET_KEY": self.secret_key, "HARNESS_S3_REGION": REGION,
                "HARNESS_S3_BUCKET": BUCKETS[0], "HARNESS_MLFLOW_BUCKET": BUCKETS[1]}


"""MLflow tracking + model registry server: sqlite backend, artifacts in SeaweedFS S3."""

from __future__ import annotations

from .base import Server
from .procs import http_answers
from .s3 import ACCESS_KEY, BUCKETS, REGION


class Mlflow(Server):
    name = "mlflow"
    timeout = 180.0

    def command(self) -> tuple[list[str], dict[str, str]]:
        data = self.layout.data("mlflow")
        argv = [str(self.layout.venv_bin("mlflow")), "server",
                "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
                "--artifacts-destination", f"s3://{BUCKETS[1]}", "--serve-artifacts",
                "--host", self.host, "--port", str(self.port), "--workers", "1"]
        env = {"MLFLOW_S3_ENDPOINT_URL": f"http://{self.host}:{self.state.port('s3')}",
               "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": self.state.secret("s3-secret-key"),
               "AWS_DEFAULT_REGION": REGION,
               "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
               # no background job runner (7 huey workers, ~2 GB): tests need none of it
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        return argv, env

    def ready(self) -> bool:
        return http_answers(f"http://{self.hostport}/health")

    def exports(self) -> dict[str, str]:
        return {"HARNESS_MLFLOW_URI": f"http://{self.hostport}"}

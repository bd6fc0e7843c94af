"""moto server: ECR, STS, S3 and the rest of the AWS APIs, in memory."""

from __future__ import annotations

from . import ecr
from .base import Server
from .procs import http_answers


class Moto(Server):
    name = "moto"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(self.layout.venv_bin("moto_server")), "-H", self.host, "-p", str(self.port)], {}

    def ready(self) -> bool:
        return http_answers(f"http://{self.hostport}/moto-api/")

    def after_start(self) -> None:
        self.venv_task("ecr-login", f"http://{self.hostport}", ecr.password())

    def exports(self) -> dict[str, str]:
        return {"HARNESS_MOTO_ENDPOINT": f"http://{self.hostport}",
                "HARNESS_MOTO_REGION": ecr.REGION, "HARNESS_ECR_ACCOUNT": ecr.ACCOUNT}

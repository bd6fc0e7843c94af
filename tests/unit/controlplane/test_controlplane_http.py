"""Pure parts of the protocol client: readable validation errors, agent ids.

Retry-After and backoff are `agent.retry`'s (tests/unit/core/test_retry.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.controlplane.http import default_agent_id, readable_validation_error
from agent.model import Action


def test_validation_errors_read_as_field_paths() -> None:
    with pytest.raises(ValidationError) as info:
        Action.model_validate({"id": "a-1", "type": "deployment_start", "environment_id": "e",
                               "deployment": {"id": "d1", "replicas": -1,
                                              "model": {"id": "m"}}})
    assert readable_validation_error(info.value) == (
        "deployment.replicas: Input should be greater than or equal to 0"
    )


def test_agent_ids_are_unique_per_client() -> None:
    settings = Settings()
    assert default_agent_id(settings) != default_agent_id(settings)

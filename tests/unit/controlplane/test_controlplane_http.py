"""Pure parts of the protocol client: Retry-After, readable validation errors, backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.controlplane.http import (
    BACKOFF_MAX,
    RETRY_AFTER_MAX,
    NativeControlPlane,
    _Transient,
    default_agent_id,
    parse_retry_after,
    readable_validation_error,
)
from agent.model import Action


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(format_datetime(datetime.fromtimestamp(now - 5, UTC),
                                             usegmt=True), now=now) == 0.0


def test_validation_errors_read_as_field_paths() -> None:
    with pytest.raises(ValidationError) as info:
        Action.model_validate({"id": "a-1", "type": "deployment_start", "environment_id": "e",
                               "deployment": {"id": "d1", "replicas": -1,
                                              "model": {"id": "m"}}})
    assert readable_validation_error(info.value) == (
        "deployment.replicas: Input should be greater than or equal to 0"
    )


def _state(exc: BaseException, attempt: int) -> Any:
    """Just the two attributes of tenacity's RetryCallState that the wait reads."""
    return SimpleNamespace(outcome=SimpleNamespace(exception=lambda: exc),
                           attempt_number=attempt)


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    waits = [NativeControlPlane._wait(_state(_Transient("x"), n)) for n in range(1, 10)]
    assert all(0 <= wait <= BACKOFF_MAX for wait in waits)
    assert NativeControlPlane._wait(_state(_Transient("x", retry_after=2), 1)) == 2
    assert NativeControlPlane._wait(
        _state(_Transient("x", retry_after=600), 1)) == RETRY_AFTER_MAX


def test_agent_ids_are_unique_per_client() -> None:
    settings = Settings()
    assert default_agent_id(settings) != default_agent_id(settings)

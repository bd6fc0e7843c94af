"""Pure parts of the protocol client: readable validation errors, pending entries, agent ids.

Retry-After and backoff are `agent.retry`'s (tests/unit/core/test_retry.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config import Settings
from agent.controlplane.http import default_agent_id, parse_action_ref, readable_validation_error
from agent.model import Action, InvalidActionRef


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


def test_a_malformed_pending_entry_is_kept_with_its_reason_not_raised() -> None:
    ref = parse_action_ref({"id": 7})
    assert isinstance(ref, InvalidActionRef)
    assert (ref.id, ref.type, ref.deployment_id) == ("7", "invalid", None)
    assert ref.reason == ("listed entry does not validate: id: Input should be a valid string; "
                          "type: Field required")
    assert not isinstance(parse_action_ref({"id": "a-1", "type": "deployment_stop"}),
                          InvalidActionRef)


def test_an_entry_without_a_usable_id_has_none_and_reasons_are_bounded() -> None:
    for entry in ("a-1", None, {"id": True}, {"id": ["a-1"]}, {"type": "deployment_stop"}):
        ref = parse_action_ref(entry)
        assert isinstance(ref, InvalidActionRef) and ref.id == "", entry
    huge = {"id": "x" * 100_000, "type": {f"k{i}": i for i in range(10_000)},
            "deployment_id": "d1"}
    ref = parse_action_ref(huge)
    assert isinstance(ref, InvalidActionRef)
    assert len(ref.id) == 256 and ref.deployment_id == "d1"
    assert ref.reason == "listed entry does not validate: type: Input should be a valid string"


def test_validation_errors_of_a_huge_payload_are_bounded() -> None:
    payload = {"id": "a-1", "type": "deployment_stop", "environment_id": "e",
               **{f"field_{i}_{'x' * 40}": i for i in range(5000)}}
    with pytest.raises(ValidationError) as info:
        Action.model_validate(payload)
    message = readable_validation_error(info.value)
    assert len(message) == 1000 and message.endswith(" more characters)")
    assert message.startswith("field_0_xxxx")

"""What follows an attempt to roll out a model: the pure decision and the results it leads to."""

from __future__ import annotations

from typing import Any

import pytest

from agent.model import DeploymentSpec, DeploymentState, Status
from agent.plugins.kubernetes.converge import (
    Decision,
    Next,
    Outcome,
    decide,
    failed_start_result,
    kept_old_result,
    ready_result,
    rollback_result,
)


def _spec(model_id: str) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"id": "d", "model": {"id": model_id, "image": "i"}})


OLD = (_spec("m1"), "reg/m1:1")
NEW = (_spec("m2"), "reg/m2:1")
LIVE: dict[str, Any] = {"metadata": {"name": "mlops-d"}}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_first_start_never_rolls_back(outcome: Outcome) -> None:
    decision = decide(outcome, live=None, last_good=None, wanted=NEW)
    if outcome is Outcome.ROLLED_OUT:
        assert decision == Decision(Next.READY)
    elif outcome is Outcome.PREPARE_FAILED:
        assert decision == Decision(Next.FAIL), "nothing was applied: nothing to clean up"
    else:
        assert decision == Decision(Next.FAIL, clean_up=True)


def test_replace_that_does_not_become_available_rolls_back_to_the_last_good_model() -> None:
    assert decide(Outcome.NOT_AVAILABLE, live=LIVE, last_good=OLD, wanted=NEW) == \
        Decision(Next.ROLL_BACK)
    assert decide(Outcome.APPLY_FAILED, live=LIVE, last_good=OLD, wanted=NEW) == \
        Decision(Next.ROLL_BACK), "part of the new rendering may be applied"


def test_replace_that_cannot_be_prepared_keeps_the_old_model_untouched() -> None:
    assert decide(Outcome.PREPARE_FAILED, live=LIVE, last_good=OLD, wanted=NEW) == \
        Decision(Next.KEEP_OLD)


def test_a_deployment_that_never_worked_is_cleaned_up_like_a_fresh_start() -> None:
    """An interrupted earlier start left objects but no last good model: ours to remove."""
    assert decide(Outcome.NOT_AVAILABLE, live=LIVE, last_good=None, wanted=NEW) == \
        Decision(Next.FAIL, clean_up=True)


def test_repeating_the_last_good_model_fails_in_place_without_cleanup() -> None:
    """Rolling back to what just failed is pointless; removing a once-good deployment is wrong."""
    assert decide(Outcome.NOT_AVAILABLE, live=LIVE, last_good=NEW, wanted=NEW) == \
        Decision(Next.FAIL, clean_up=False)


def test_results_say_which_model_serves() -> None:
    ready = ready_result(NEW[0], NEW[1], "http://h/d/predict")
    assert (ready.status, ready.state, ready.data.old_model_in_use) == (
        Status.PASSING, DeploymentState.READY, False)
    assert ready_result(NEW[0], NEW[1], "u", "HTTP 502").status == Status.WARNING

    kept = kept_old_result(NEW[0], OLD, True, "u", RuntimeError("build failed"))
    assert (kept.status, kept.state, kept.data.current_model_id, kept.data.old_model_in_use) == (
        Status.FAILING, DeploymentState.READY, "m1", True)
    assert "build failed" in (kept.data.message or "")

    failed = failed_start_result(NEW[0], NEW[1], "CrashLoopBackOff", created=True,
                                 cleanup_note="; removed")
    assert failed.data.current_model_id is None and failed.data.message == \
        "model m2 did not become available: CrashLoopBackOff; removed"

    back = rollback_result("model m2 did not become available: x", OLD, "u", back_serving=False,
                           back_problem="ImagePullBackOff")
    assert (back.state, back.data.current_model_id) == (DeploymentState.ERRORED, "m1")
    assert back.data.message and back.data.message.endswith("is not available either: "
                                                            "ImagePullBackOff")

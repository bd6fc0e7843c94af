"""Converge and roll back: what to do after an attempt to roll out a model, decided purely.

`decide` looks at the live Deployment (before the attempt), the last model
that rolled out successfully (`history.last_good`) and how the attempt
ended, and says what comes next. The result builders below turn the
decision into the `ActionResult` the control plane shows. Keeping these pure
puts the rules that protect a serving model in one place with unit tests;
the plugin only carries them out.

The rules:
- the new model became available: report it serving;
- it could not even be prepared (image build, rendering): nothing was
  applied, the last good model serves on (or the error is raised when there
  is none);
- it was applied but did not become available: roll back to the last good
  model; with none to return to (a first start, or the last good *is* the
  new one), fail, and remove the objects a start created unless it found a
  deployment that once worked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.model import ActionResult, DeploymentSpec, DeploymentState, ResultData, Status
from agent.plugins.kubernetes.history import Good


class Outcome(StrEnum):
    """How the attempt to roll out the wanted model ended."""

    ROLLED_OUT = "rolled-out"  # the new rollout is complete
    PREPARE_FAILED = "prepare-failed"  # image or rendering failed: nothing was applied
    APPLY_FAILED = "apply-failed"  # an API call failed while applying or waiting
    NOT_AVAILABLE = "not-available"  # applied, but it did not become available


class Next(StrEnum):
    """What the plugin does next."""

    READY = "ready"  # report the new model serving
    KEEP_OLD = "keep-old"  # report that the last good model serves on, untouched
    FAIL = "fail"  # report (or raise) the failure: there is nothing to go back to
    ROLL_BACK = "roll-back"  # apply the last good model again


@dataclass(frozen=True)
class Decision:
    """The next step, and whether to remove what a failed start created."""

    next: Next
    clean_up: bool = False


def decide(outcome: Outcome, *, live: dict[str, Any] | None, last_good: Good | None,
           wanted: Good | None) -> Decision:
    """What follows `outcome`, given the live Deployment found before the attempt.

    `wanted`: the (spec, image) being rolled out; None when no image exists yet.
    """
    if outcome is Outcome.ROLLED_OUT:
        return Decision(Next.READY)
    if outcome is Outcome.PREPARE_FAILED:
        return Decision(Next.KEEP_OLD if last_good is not None else Next.FAIL)
    if last_good is None or last_good == wanted:
        # a deployment that never became available counts as ours to clean up, even when an
        # earlier (interrupted) delivery of this start created it
        return Decision(Next.FAIL, clean_up=live is None or last_good is None)
    return Decision(Next.ROLL_BACK)


def ready_result(spec: DeploymentSpec, image: str, url: str,
                 public_problem: str | None = None) -> ActionResult:
    """The new model serves; `public_problem`: its public URL does not answer yet."""
    message = f"model {spec.model.id} is serving at {url}"
    if public_problem is not None:
        message = (f"model {spec.model.id} is available in the cluster, but its public URL "
                   f"does not answer yet: {public_problem}")
    return ActionResult(
        status=Status.PASSING if public_problem is None else Status.WARNING,
        state=DeploymentState.READY, data=ResultData(
            prediction_url=url, image=image, current_model_id=spec.model.id,
            old_model_in_use=False, message=message))


def kept_old_result(spec: DeploymentSpec, good: Good, still_serving: bool, url: str,
                    error: Exception) -> ActionResult:
    """The new model could not even be prepared; the running one was not touched."""
    old_spec, old_image = good
    message = (f"model {spec.model.id} was not deployed: {error}; model {old_spec.model.id} "
               + ("is still serving" if still_serving else "stays in place"))
    return ActionResult(
        status=Status.FAILING,
        state=DeploymentState.READY if still_serving else DeploymentState.ERRORED,
        data=ResultData(prediction_url=url, image=old_image, current_model_id=old_spec.model.id,
                        old_model_in_use=True, message=message))


def failed_start_result(spec: DeploymentSpec, image: str, reason: str, *, created: bool,
                        cleanup_note: str = "") -> ActionResult:
    """The model did not become available and there is nothing to go back to."""
    message = f"model {spec.model.id} did not become available: {reason}{cleanup_note}"
    return ActionResult.failing(message, image=image,
                                current_model_id=None if created else spec.model.id,
                                old_model_in_use=False)


def rollback_result(reason: str, good: Good, url: str, *, back_serving: bool,
                    back_problem: str = "") -> ActionResult:
    """The new model failed; the last good one was applied again."""
    old_spec, old_image = good
    message = (f"{reason}; rolled back: model {old_spec.model.id} "
               + ("is still serving" if back_serving else
                  f"is not available either: {back_problem}"))
    return ActionResult(
        status=Status.FAILING,
        state=DeploymentState.READY if back_serving else DeploymentState.ERRORED,
        data=ResultData(prediction_url=url, image=old_image, current_model_id=old_spec.model.id,
                        old_model_in_use=True, message=message))


def rollback_failed_result(reason: str, good: Good, error: Exception) -> ActionResult:
    """Applying the last good model again failed too."""
    old_spec, old_image = good
    message = f"{reason}; rolling back to model {old_spec.model.id} failed: {error}"
    return ActionResult.failing(message, old_model_in_use=True,
                                current_model_id=old_spec.model.id, image=old_image)

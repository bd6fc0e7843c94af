"""The one boundary policy: status mapping, Retry-After, the cap, retries and the service loop.

No clock is involved: sleeps go to a recorder (`retrying(sleep=...)`, a `wake`
event whose `wait` records the timeout and returns at once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from agent.errors import (
    AgentError,
    ClusterError,
    ConflictError,
    ControlPlaneError,
    LeaseConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from agent.retry import (
    CAP,
    Outage,
    backoff,
    error_for_status,
    is_transient_status,
    parse_retry_after,
    retry_after_of,
    retrying,
    service_loop,
    wait_for,
)

NOW = 1_800_000_000.0


def _http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, UTC), usegmt=True)


def _transient(message: str = "503", retry_after: float | None = None) -> AgentError:
    return error_for_status(503, message, ClusterError, retry_after=retry_after)


class RecordingEvent(threading.Event):
    """An event whose `wait` records the timeout instead of waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0.0))
        return self.is_set()


# -- what is transient, and which class an HTTP status becomes -----------------------------------


@pytest.mark.parametrize(("status", "transient"), [
    (400, False), (401, False), (403, False), (404, False), (409, False), (422, False),
    (408, True), (429, True), (500, True), (502, True), (503, True), (504, True),
])
def test_transient_statuses_are_408_429_and_5xx(status: int, transient: bool) -> None:
    assert is_transient_status(status) is transient


def test_status_table_picks_the_class_and_the_boundary_the_rest() -> None:
    assert type(error_for_status(403, "m", ClusterError)) is PermissionDeniedError
    assert type(error_for_status(404, "m", ClusterError)) is NotFoundError
    conflict = error_for_status(409, "m", ClusterError)
    assert type(conflict) is ConflictError and not conflict.transient
    unavailable = error_for_status(503, "down", ClusterError, retry_after=7.0)
    assert type(unavailable) is ClusterError
    assert (unavailable.status, unavailable.transient, unavailable.retry_after) == (503, True, 7.0)
    invalid = error_for_status(422, "bad", ClusterError, retry_after=7.0)
    assert (invalid.transient, invalid.retry_after) == (False, None)
    assert str(invalid) == "bad"


def test_a_boundary_refines_an_entry_and_keeps_the_shared_meaning() -> None:
    error = error_for_status(409, "leased by agent-1", ControlPlaneError,
                             refine={409: LeaseConflictError})
    assert type(error) is LeaseConflictError
    assert isinstance(error, ConflictError) and isinstance(error, ControlPlaneError)
    assert not error.transient


# -- Retry-After ---------------------------------------------------------------------------------


def test_retry_after_in_delta_seconds() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0


def test_retry_after_as_an_http_date() -> None:
    assert parse_retry_after(_http_date(30), now=NOW) == pytest.approx(30.0)
    assert parse_retry_after(_http_date(-5), now=NOW) == 0.0  # already past: go now


def test_retry_after_is_capped_in_both_forms() -> None:
    assert parse_retry_after("600") == CAP
    assert parse_retry_after(_http_date(3600), now=NOW) == CAP


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Tue, 99 Foo 2026"])
def test_unreadable_or_absent_retry_after_is_none(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_header_is_found_whatever_its_case() -> None:
    assert retry_after_of({"retry-after": "3"}) == 3.0
    assert retry_after_of({"Retry-After": "4"}) == 4.0
    assert retry_after_of({}) is None and retry_after_of(None) is None


# -- waits ---------------------------------------------------------------------------------------


def test_backoff_grows_with_full_jitter_and_is_capped() -> None:
    for attempt in range(1, 30):
        waits = [backoff(attempt) for _ in range(50)]
        assert all(0 <= w <= min(CAP, 0.25 * 2 ** attempt) for w in waits)
    assert max(backoff(20) for _ in range(200)) > 2.0  # late attempts do wait longer


def test_wait_follows_retry_after_up_to_the_cap() -> None:
    assert wait_for(_transient(retry_after=2.0), 1) == 2.0
    assert wait_for(_transient(retry_after=600.0), 1) == CAP
    assert 0 <= wait_for(_transient(), 1) <= 0.5


# -- retrying ------------------------------------------------------------------------------------


def test_transient_errors_are_retried_until_success(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    outcomes: list[Exception | str] = [_transient("first"), _transient("second", 3.0), "ok"]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with caplog.at_level(logging.DEBUG, logger="agent.retry"):
        assert retrying("GET /x", 5, sleep=sleeps.append)(call) == "ok"
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.5 and sleeps[1] == 3.0
    lines = [r for r in caplog.records if "GET /x failed" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.DEBUG]
    assert "retry 2 of 4 in 3.00s" in lines[1].getMessage()


def test_a_conflict_is_not_retried() -> None:
    sleeps: list[float] = []
    calls = []

    def create() -> None:
        calls.append(1)
        raise error_for_status(409, "already exists", ClusterError)

    with pytest.raises(ConflictError, match="already exists"):
        retrying("POST /x", 5, sleep=sleeps.append)(create)
    assert calls == [1] and sleeps == []


def test_the_last_error_propagates_after_the_attempts() -> None:
    sleeps: list[float] = []
    errors = [_transient(f"try {n}") for n in range(1, 4)]

    def call() -> None:
        raise errors.pop(0)

    with pytest.raises(ClusterError, match="try 3") as info:
        retrying("GET /x", 3, sleep=sleeps.append)(call)
    assert info.value.transient and len(sleeps) == 2


def test_no_sleep_outlasts_the_deadline() -> None:
    """Retry-After 7 within a 10 s budget: one wait, then the error (with its Retry-After)
    goes to the caller instead of a second wait that would end past the budget."""
    sleeps: list[float] = []

    def call() -> None:
        raise _transient("busy", retry_after=7.0)

    with pytest.raises(ClusterError) as info:
        retrying("GET /x", 5, deadline=10.0, sleep=sleeps.append)(call)
    assert sleeps == [7.0]
    assert info.value.retry_after == 7.0


# -- the service loop ----------------------------------------------------------------------------


def test_service_loop_gives_up_after_the_consecutive_failure_limit() -> None:
    calls: list[int] = []

    def work() -> None:
        calls.append(1)
        raise _transient(f"down {len(calls)}")

    stop = RecordingEvent()
    error = service_loop(work, 1.0, stop=stop, max_consecutive_failures=4)
    assert isinstance(error, ClusterError) and str(error) == "down 4"
    assert len(calls) == 4 and len(stop.waits) == 3


def scripted(script: list[str], stop: threading.Event) -> Callable[[], None]:
    """Work that fails, succeeds or sets `stop`, step by step as `script` says."""

    def work() -> None:
        step = script.pop(0)
        if step == "stop":
            stop.set()
        elif step == "fail":
            raise _transient("connection refused")

    return work


def test_a_success_resets_the_failure_count() -> None:
    script = ["fail", "fail", "ok", "fail", "fail", "ok", "stop"]
    stop = RecordingEvent()
    assert service_loop(scripted(script, stop), 1.0, stop=stop,
                        max_consecutive_failures=3) is None
    assert script == []


def test_failures_back_off_from_the_interval_honouring_retry_after_up_to_the_cap() -> None:
    errors: list[AgentError] = [_transient(), _transient(retry_after=30.0), _transient(),
                                _transient(), _transient(retry_after=30.0), _transient()]
    stop, wake = threading.Event(), RecordingEvent()

    def work() -> float | None:
        if errors:
            raise errors.pop(0)
        stop.set()
        return None

    service_loop(work, 4.0, stop=stop, jitter=0.0, wake=wake)
    # 4, then max(8, Retry-After 30), 16, 32, then max(64 -> CAP, 30) = CAP, capped
    assert wake.waits[:6] == [4.0, 30.0, 16.0, 32.0, CAP, CAP]


def test_work_sets_its_own_next_delay_and_jitter_spreads_the_interval() -> None:
    delays: list[float | None] = [0.0, None, 2.5]
    stop, wake = threading.Event(), RecordingEvent()

    def work() -> float | None:
        delay = delays.pop(0)
        if not delays:
            stop.set()
        return delay

    service_loop(work, 10.0, stop=stop, jitter=0.2, wake=wake)
    assert wake.waits[0] == 0.0 and 8.0 <= wake.waits[1] <= 12.0 and wake.waits[2] == 2.5


def test_an_outage_is_logged_once_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    stop = RecordingEvent()
    work = scripted(["fail", "fail", "fail", "ok", "stop"], stop)
    with caplog.at_level(logging.DEBUG, logger="agent.retry"):
        service_loop(work, 0.0, stop=stop, outage=Outage("polling"))
    about = [r for r in caplog.records if "polling" in r.getMessage()]
    assert [r.levelno for r in about] == [logging.WARNING, logging.DEBUG, logging.DEBUG,
                                          logging.INFO]
    assert "recovered after 3 failed attempt(s)" in about[-1].getMessage()


def test_a_bug_in_the_work_is_logged_with_its_traceback_and_survived(
        caplog: pytest.LogCaptureFixture) -> None:
    script = ["bug", "bug", "stop"]
    stop = RecordingEvent()

    def work() -> None:
        if script.pop(0) == "bug":
            raise KeyError("oops")
        stop.set()

    with caplog.at_level(logging.ERROR, logger="agent.retry"):
        assert service_loop(work, 0.0, stop=stop, max_consecutive_failures=5) is None
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # once per outage, not once per turn

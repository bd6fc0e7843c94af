"""The one retry policy of every boundary (control plane, Kubernetes, registry, object stores).

What is transient: connection errors and timeouts (each boundary maps them to
an error flagged `transient`), 408, 429 and 5xx. A 409 is never retried: on a
create it means "already there" and the caller handles it. Waits grow
exponentially with full jitter, or follow the server's `Retry-After`
(delta-seconds or an HTTP date); both are capped at `CAP`. A line is logged
before each sleep: DEBUG per retry; loops that run for the agent's lifetime
(`service_loop`) log an outage once at WARNING and its end at INFO.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_never
from tenacity.stop import stop_base

from agent.errors import STATUS_ERRORS, AgentError

log = logging.getLogger(__name__)

#: seconds; the longest any single wait may be, backoff or Retry-After
CAP = 60.0
#: seconds; the first backoff wait is drawn from [0, 2 * BASE]
BASE = 0.25


def is_transient_status(status: int) -> bool:
    """True for the HTTP statuses that retrying may fix: 408, 429 and 5xx."""
    return status in (408, 429) or status >= 500


def is_transient(exc: BaseException) -> bool:
    """True for an error its boundary flagged as transient (see `AgentError.transient`)."""
    return bool(getattr(exc, "transient", False))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date), at most `CAP`.

    None when the header is absent or unreadable; a date in the past is 0.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), CAP)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a zone-less one is read as such
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delay), CAP)


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """`parse_retry_after` of a response's headers (any mapping, case as sent)."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    return parse_retry_after(value)


def error_for_status(
    status: int,
    message: str,
    default: type[AgentError],
    *,
    refine: Mapping[int, type[AgentError]] | None = None,
    retry_after: float | None = None,
) -> AgentError:
    """The error for an HTTP error answer: `errors.STATUS_ERRORS` picks the class
    (a boundary may `refine` an entry), `default` for any other status; transient
    when retrying may help, carrying the server's Retry-After."""
    cls = (refine or {}).get(status) or STATUS_ERRORS.get(status, default)
    error = cls(message)
    error.status = status
    error.transient = is_transient_status(status)
    error.retry_after = retry_after if error.transient else None
    return error


def backoff(attempt: int, base: float = BASE) -> float:
    """Full-jitter exponential backoff for the `attempt`-th failure (1, 2, ...), at most CAP."""
    return random.uniform(0, min(CAP, base * 2 ** attempt))


def wait_for(exc: BaseException | None, attempt: int, base: float = BASE) -> float:
    """How long to wait after `exc`: its Retry-After when it has one, else `backoff`."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return min(float(retry_after), CAP)
    return backoff(attempt, base)


def retrying(
    what: str,
    attempts: int | None,
    *,
    deadline: float | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
    sleep: Callable[[float], Any] = time.sleep,
    logger: logging.Logger = log,
) -> Retrying:
    """A tenacity `Retrying` with this policy: retry `transient` errors, at most `attempts`
    times in all (None: no limit) and never sleeping past `deadline` seconds after the
    first attempt; the last error propagates unchanged.

    Use as `for attempt in retrying(...): with attempt: ...` or `retrying(...)(fn)`.
    """

    def wait(state: RetryCallState) -> float:
        return wait_for(state.outcome.exception() if state.outcome else None,
                        state.attempt_number)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        limit = f" of {attempts - 1}" if attempts else ""
        logger.debug("%s failed (%s); retry %d%s in %.2fs", what, exc, state.attempt_number,
                     limit, state.upcoming_sleep)

    return Retrying(
        retry=retry_if_exception(transient),
        stop=(stop_after_attempt(attempts) if attempts else stop_never) | _Deadline(deadline),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


class _Deadline(stop_base):
    """Stop before a sleep that would end past `deadline` seconds after the first attempt."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        if self.deadline is None:
            return False
        # idle_for counts the sleeps (also when `sleep` is not the clock's, as in tests)
        elapsed = max(state.seconds_since_start or 0.0, state.idle_for)
        return elapsed + state.upcoming_sleep > self.deadline


class Outage:
    """Logs a failing background task once at WARNING when it starts failing, each retry
    at DEBUG, and once at INFO when it recovers: not a warning per attempt."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.failures = 0
        self._log = logger

    def failed(self, exc: BaseException, retry_in: float | None = None) -> None:
        """Count a failure; `retry_in` is the coming sleep, for the log line."""
        self.failures += 1
        when = f"retrying in {retry_in:.1f}s" if retry_in is not None else "will retry"
        if self.failures == 1:
            self._log.warning("%s failing: %s (%s; logged again when it recovers)",
                              self.what, exc, when)
        else:
            self._log.debug("%s still failing (%d in a row): %s; %s", self.what,
                            self.failures, exc, when)

    def succeeded(self) -> None:
        """End an outage, if there was one."""
        if self.failures:
            self._log.info("%s recovered after %d failed attempt(s)", self.what, self.failures)
        self.failures = 0


def jittered(seconds: float, jitter: float = 0.2) -> float:
    """`seconds` +- `jitter` (a fraction), so that many agents do not call in step."""
    return seconds * random.uniform(1 - jitter, 1 + jitter)


def service_loop(
    work: Callable[[], float | None],
    interval: float,
    *,
    stop: threading.Event,
    max_consecutive_failures: int | None = None,
    jitter: float = 0.2,
    outage: Outage | None = None,
    wake: threading.Event | None = None,
) -> BaseException | None:
    """Call `work` every `interval` seconds (+- `jitter`) until `stop` is set; forgiving of
    intermittent failures (Prefect's `critical_service_loop` is the model).

    `work` may return the seconds until its next call instead (0: at once). A failure
    waits `interval` doubled per failure in a row, or the error's Retry-After, capped at
    `CAP`. After `max_consecutive_failures` in a row the loop gives up and returns the
    last error, so that the caller can exit and Kubernetes restart the process; it
    returns None when stopped. `wake`, when given, is what the sleep waits on (set it
    to cut a sleep short; `stop` must set it too); it is cleared before each call.
    """
    outage = outage or Outage("background task")
    while not stop.is_set():
        if wake is not None:
            wake.clear()  # before the call: a wake-up during it is not lost
        try:
            delay = work()
        except Exception as exc:
            if not isinstance(exc, AgentError) and not outage.failures:
                log.exception("unexpected error in %s", outage.what)  # a bug: show where
            if max_consecutive_failures and outage.failures + 1 >= max_consecutive_failures:
                outage.failures += 1
                return exc
            delay = max(jittered(min(CAP, interval * 2 ** outage.failures), jitter),
                        min(float(getattr(exc, "retry_after", None) or 0.0), CAP))
            outage.failed(exc, delay)
        else:
            outage.succeeded()
            if delay is None:
                delay = jittered(interval, jitter)
        (wake or stop).wait(delay)
    return None

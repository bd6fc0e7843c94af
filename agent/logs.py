"""Logging: configured once by the CLI, text or JSON, with action context and secret scrubbing.

Every record logged while an action runs carries its action id and
deployment id (set through `action_context`), so one grep follows an action.
Secret values registered with `register_secret` are replaced by `***` in every
record, as a second line of defence behind not logging them at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import LoggingSettings

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "action_context", default=None
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# what `scrub` iterates: an immutable snapshot, longest first (a secret that contains another
# is replaced whole), swapped under the lock so threads registering secrets never disturb it
_ordered: tuple[str, ...] = ()


MIN_SECRET_LENGTH = 8


def register_secret(value: str | None) -> None:
    """Scrub this value from every log record from now on.

    Values shorter than MIN_SECRET_LENGTH are ignored: scrubbing "true" or "s3" would
    mangle every line while protecting nothing (register credential fields only).
    """
    global _ordered
    if value in _secrets:  # re-read secrets (rotation) are registered on every use
        return
    if value and len(value.strip()) >= MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(value)
            if value.strip() != value:
                _secrets.add(value.strip())
            _ordered = tuple(sorted(_secrets, key=len, reverse=True))


def scrub(text: str) -> str:
    """The text with every registered secret replaced by '***'."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def redact_uri(uri: str | None) -> str:
    """A URI fit for messages, events and results: user info removed, query values redacted.

    Signed URLs carry their credential in the query (`X-Amz-Signature`, `X-Goog-Signature`,
    Azure SAS `sig=`, `token=`...): every value is replaced, the names are kept so the message
    still says what kind of URL it was. The fragment is dropped. The one function every
    message about a model location goes through.
    """
    if not uri:
        return ""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = "&".join(
            f"{item.split('=', 1)[0]}=<redacted>" if item else ""
            for item in parts.query.split("&")
        ) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:  # not parseable (e.g. a broken IPv6 literal): keep only what is safe
        head = uri.split("?", 1)[0].split("#", 1)[0]
        scheme, sep, rest = head.partition("://")
        if sep:
            authority, slash, path = rest.partition("/")
            return f"{scheme}://{authority.rsplit('@', 1)[-1]}{slash}{path}"
        return head


_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_uris_in(text: str) -> str:
    """Free text (a log tail, a server's error) with every URI in it passed through
    `redact_uri`: user info gone, query values (signatures, SAS `sig=`) redacted."""
    return _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), text)


@contextlib.contextmanager
def action_context(action_id: str, deployment_id: str | None) -> Iterator[None]:
    """Tag log records in this block (and this thread) with the action and deployment ids."""
    token = _context.set({"action_id": action_id, "deployment_id": deployment_id or "-"})
    try:
        yield
    finally:
        _context.reset(token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get() or {}
        record.action_id = context.get("action_id")
        record.deployment_id = context.get("deployment_id")
        if _secrets:
            record.msg = scrub(record.getMessage())
            record.args = None
        return True


class TextFormatter(logging.Formatter):
    """`time level logger message [action=... deployment=...]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        action_id = getattr(record, "action_id", None)
        if action_id:
            line += f" [action={action_id} deployment={getattr(record, 'deployment_id', '-')}]"
        return scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "action_id", None):
            entry["action_id"] = getattr(record, "action_id", None)
            entry["deployment_id"] = getattr(record, "deployment_id", None)
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        # scrubbed before encoding too: JSON escapes a secret holding '"' or '\\'
        return scrub(json.dumps(entry, default=str))


def configure_logging(settings: LoggingSettings) -> None:
    """Install one stderr handler on the root logger; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("urllib3", "kubernetes", "botocore", "boto3", "google", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

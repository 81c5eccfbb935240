"""Why an attempt failed: which delivery failures a later attempt can fix
(``classify``), and the note on ``job.meta`` that tells a dead letter why its
last attempt failed (``note_failure``; only the notifier writes and reads it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)
from saq import Job

__all__ = [
    "FAILURE",
    "Failure",
    "FailureKind",
    "classify",
    "fail_permanently",
    "failure_of",
    "give_up",
    "note_failure",
    "one_line",
]

FailureKind = Literal["malformed", "rejected", "unrenderable", "transient"]
"""Why an attempt failed, as dead letters and their metrics class it. Only
``transient`` failures are retried; a job that runs out of attempts on one is
dead-lettered as ``retries_exhausted``."""

FAILURE = "failure"
"""The ``job.meta`` key of the note on the last failed attempt."""

# Replies to MAIL FROM, RCPT TO and DATA judge this message. A 5xx to the
# greeting, EHLO, STARTTLS or AUTH judges the relay or our configuration
# instead, so it stays retryable: once fixed, queued mail still goes out.
_MESSAGE_REFUSALS = (SMTPSenderRefused, SMTPRecipientRefused, SMTPDataError)


@dataclass(frozen=True)
class Failure:
    """A failed delivery attempt, as the retry policy sees it."""

    permanent: bool
    reason: str
    smtp_code: int | None = None


def classify(exc: SMTPException | OSError) -> Failure:
    """Classify a failed send: permanent (a 5xx about this message), else transient.

    Transient covers 4xx replies, refused/reset/dropped connections, timeouts
    and any other network error.
    """
    if isinstance(exc, SMTPRecipientsRefused):
        refusals = exc.recipients
        first = refusals[0] if refusals else None
        return Failure(
            permanent=bool(refusals) and all(_is_permanent(r.code) for r in refusals),
            reason=_recipient_reason(first) if first else "all recipients refused",
            smtp_code=first.code if first else None,
        )
    if isinstance(exc, SMTPResponseException):
        reason = _recipient_reason(exc) if isinstance(exc, SMTPRecipientRefused) else exc.message
        return Failure(
            permanent=isinstance(exc, _MESSAGE_REFUSALS) and _is_permanent(exc.code),
            reason=reason,
            smtp_code=exc.code,
        )
    if isinstance(exc, SMTPException):
        return Failure(permanent=False, reason=exc.message or type(exc).__name__)
    return Failure(permanent=False, reason=f"{type(exc).__name__}: {exc}")


def _is_permanent(code: int) -> bool:
    return 500 <= code < 600


def _recipient_reason(refusal: SMTPRecipientRefused) -> str:
    # Relays often echo the address back; logs carry the recipient's domain only.
    return re.sub(re.escape(refusal.recipient), "recipient", refusal.message, flags=re.IGNORECASE)


def fail_permanently(job: Job) -> None:
    """Make the exception about to be raised fail ``job`` without a retry.

    SAQ retries while ``retries > attempts``; lowering ``retries`` to the
    attempts made is its only hook for "do not retry this one".
    """
    job.retries = job.attempts


def give_up(job: Job, *, kind: FailureKind, reason: str, error_class: str) -> None:
    """Note why ``job`` failed for good, and make the exception about to be
    raised fail it without a retry."""
    note_failure(job, kind=kind, reason=reason, error_class=error_class)
    fail_permanently(job)


def note_failure(job: Job, *, kind: FailureKind, reason: str, error_class: str) -> None:
    """Note on ``job.meta`` why its current attempt failed (one line, no
    personal data): what a dead letter shows if this was the last attempt.

    The note names its attempt, so a later attempt that fails without a note
    (a sweep, say) is never described by an earlier one's.
    """
    job.meta[FAILURE] = {
        "attempt": job.attempts,
        "kind": kind,
        "reason": one_line(reason),
        "error_class": error_class,
    }


def failure_of(job: Job) -> dict[str, Any] | None:
    """The note on ``job``'s current attempt, if it failed with one."""
    note = job.meta.get(FAILURE)
    if isinstance(note, dict) and note.get("attempt") == job.attempts:
        return note
    return None


def one_line(text: str, *, limit: int = 300) -> str:
    """``text`` on one line, whitespace collapsed, at most ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

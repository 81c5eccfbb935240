"""Which delivery failures a later attempt can fix."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosmtplib import (
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)

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

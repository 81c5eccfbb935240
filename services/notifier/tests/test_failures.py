"""Which SMTP failures are retried and which fail the job at once."""

from __future__ import annotations

import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPException,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from herald_notifier.failures import classify


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (SMTPRecipientsRefused([SMTPRecipientRefused(550, "5.1.1 no such user", "a@x.org")]), 550),
        (SMTPSenderRefused(553, "5.7.1 sender not allowed", "no-reply@x.org"), 553),
        (SMTPDataError(554, "5.7.1 message rejected as spam"), 554),
    ],
)
def test_a_5xx_about_the_message_is_permanent(exc: SMTPException, code: int) -> None:
    failure = classify(exc)

    assert failure.permanent
    assert failure.smtp_code == code


@pytest.mark.parametrize(
    "exc",
    [
        SMTPRecipientsRefused([SMTPRecipientRefused(451, "4.3.0 try later", "a@x.org")]),
        SMTPRecipientsRefused([SMTPRecipientRefused(452, "4.2.2 mailbox full", "a@x.org")]),
        SMTPDataError(421, "4.7.0 too many connections"),
        SMTPResponseException(421, "4.3.2 shutting down"),
        # A 5xx to the session rather than the message: our configuration or
        # the relay is at fault, and queued mail should go out once it is fixed.
        SMTPAuthenticationError(535, "5.7.8 bad credentials"),
        SMTPConnectError("Error connecting to 127.0.0.1 on port 1: Connection refused"),
        SMTPServerDisconnected("Connection lost"),
        SMTPReadTimeoutError("Timed out waiting for server response"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        OSError(101, "Network is unreachable"),
    ],
)
def test_everything_else_is_retried(exc: SMTPException | OSError) -> None:
    assert not classify(exc).permanent


def test_reason_keeps_the_recipient_address_out_of_logs() -> None:
    refusal = SMTPRecipientRefused(550, "5.1.1 <Ada@Example.org>: no such user", "ada@example.org")

    failure = classify(SMTPRecipientsRefused([refusal]))

    assert failure.reason == "5.1.1 <recipient>: no such user"

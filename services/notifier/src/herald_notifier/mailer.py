"""Hand emails to the SMTP relay."""

from __future__ import annotations

import contextlib
from email.message import EmailMessage
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponse
from aiosmtplib.typing import Default

from herald_notifier.settings import Settings

QUIT_TIMEOUT_SECONDS = 5.0
"""Longest a polite QUIT may take once the message is accepted."""


class Mailer:
    """Opens one SMTP session (``Session``) to the configured relay per email."""

    def __init__(self, settings: Settings) -> None:
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._use_tls = settings.smtp_security == "tls"
        # False, not None: aiosmtplib's None means "STARTTLS if offered", which
        # would make "none" depend on what the relay advertises.
        self._start_tls = settings.smtp_security == "starttls"
        self._username = settings.smtp_username
        self._password = (
            settings.smtp_password.get_secret_value() if settings.smtp_password else None
        )
        self._timeout = settings.smtp_timeout

    def session(self) -> Session:
        """A new, unconnected session."""
        return Session(
            _TrackingSMTP(
                hostname=self._host,
                port=self._port,
                use_tls=self._use_tls,
                start_tls=self._start_tls,
                username=self._username,
                password=self._password,
                timeout=self._timeout,
            )
        )


class Session:
    """One SMTP session: ``send`` returns as soon as the relay accepted the
    message (250 to DATA), *before* QUIT, so the caller can record the
    delivery first; ``close`` says QUIT (politely, if the session is sound).
    """

    def __init__(self, smtp: _TrackingSMTP) -> None:
        self._smtp = smtp

    @property
    def data_started(self) -> bool:
        """Whether DATA was sent: from then on a failure leaves it unknown whether
        the relay has the message (RFC 1047)."""
        return self._smtp.data_started

    async def send(self, email: EmailMessage) -> None:
        """Connect (TLS, AUTH as configured) and deliver ``email``, envelope taken
        from its From and To.

        Raises aiosmtplib's ``SMTPException`` subclasses or ``OSError``; see
        ``herald_notifier.failures`` for which of them a retry can fix.
        """
        await self._smtp.connect()
        await self._smtp.send_message(email)

    async def close(self, *, polite: bool = True) -> None:
        """End the session: QUIT if ``polite`` and still connected, then close.

        Never raises: the message's fate is decided by then.
        """
        if polite and self._smtp.is_connected:
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await self._smtp.quit(timeout=QUIT_TIMEOUT_SECONDS)
        self._smtp.close()


class _TrackingSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, remembering whether DATA was sent."""

    data_started = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
    ) -> SMTPResponse:
        self.data_started = True
        return await super().data(message, timeout=timeout)

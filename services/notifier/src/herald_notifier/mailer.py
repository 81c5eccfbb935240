"""Hand emails to the SMTP relay."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from herald_notifier.settings import Settings


class Mailer:
    """Sends each email over its own SMTP connection to the configured relay."""

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

    async def send(self, email: EmailMessage) -> None:
        """Deliver ``email`` to the relay, envelope taken from its From and To.

        Raises aiosmtplib's ``SMTPException`` subclasses or ``OSError``; see
        ``herald_notifier.failures`` for which of them a retry can fix.
        """
        await aiosmtplib.send(
            email,
            hostname=self._host,
            port=self._port,
            use_tls=self._use_tls,
            start_tls=self._start_tls,
            username=self._username,
            password=self._password,
            timeout=self._timeout,
        )

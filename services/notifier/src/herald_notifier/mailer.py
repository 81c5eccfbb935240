"""Hand emails to the SMTP relay, over connections kept open between emails.

The ``Mailer`` keeps up to ``HERALD_SMTP_POOL_SIZE`` idle connections and hands
one to each ``Session``. Only a connection whose last transaction ended with a
250 to DATA is kept; one idle longer than ``HERALD_SMTP_POOL_IDLE_SECONDS`` is
retired; a send that fails before DATA on a kept connection goes again once on
a new one. Why: docs/notifier.md ("SMTP connections").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

import aiosmtplib
from aiosmtplib import SMTPException, SMTPResponse, SMTPResponseException
from aiosmtplib.typing import Default

from herald_notifier.render import RenderedEmail
from herald_notifier.settings import Settings

QUIT_TIMEOUT_SECONDS = 5.0
"""Longest a polite QUIT may take once the message is accepted."""


class Mailer:
    """Hands out ``Session``s to the configured relay, keeping connections for reuse.

    ``aclose`` (the worker's shutdown) says QUIT on the kept ones; a session
    ending after it closes its connection instead of keeping it.
    """

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
        self.pool_size = (
            settings.notifier_concurrency
            if settings.smtp_pool_size is None
            else settings.smtp_pool_size
        )
        self._idle_seconds = settings.smtp_pool_idle_seconds
        self._max_messages = settings.smtp_pool_max_messages
        self._idle: list[Connection] = []
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        """Connections kept open, waiting for the next email."""
        return len(self._idle)

    def session(self) -> Session:
        """A session for one email; it takes a connection when it sends."""
        return Session(self)

    async def aclose(self) -> None:
        """Say QUIT on every kept connection (and close it); keep none from now on."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(connection.quit() for connection in idle))
        if self._retiring:
            await asyncio.wait(self._retiring)

    def _connection(self) -> Connection:
        return Connection(
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

    def _take(self) -> Connection | None:
        """The most recently kept connection still fit for use, if any."""
        now = time.monotonic()
        # The oldest are at the bottom: retire them once stale, even under a
        # load light enough never to reach them.
        while self._idle and not self._fresh(self._idle[0], now):
            self._retire(self._idle.pop(0))
        while self._idle:
            connection = self._idle.pop()
            if self._fresh(connection, now):
                return connection
            self._retire(connection)
        return None

    async def _give_back(self, connection: Connection) -> None:
        """Keep ``connection`` (its last transaction succeeded) or QUIT it."""
        if (
            self._closed
            or len(self._idle) >= self.pool_size
            or connection.messages >= self._max_messages
            or not connection.smtp.is_connected
        ):
            await connection.quit()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def _fresh(self, connection: Connection, now: float) -> bool:
        return connection.smtp.is_connected and now - connection.idle_since < self._idle_seconds

    def _retire(self, connection: Connection) -> None:
        # Off the sending path: this QUIT's round trip is nobody's email.
        task = asyncio.create_task(connection.quit())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


class Connection:
    """One SMTP connection, and how many messages it carried."""

    def __init__(self, smtp: _TrackingSMTP) -> None:
        self.smtp = smtp
        self.messages = 0
        self.idle_since = 0.0

    async def send(self, email: RenderedEmail) -> None:
        self.smtp.data_started = False
        await self.smtp.sendmail(email.sender, [email.recipient], email.data)
        self.messages += 1

    async def quit(self) -> None:
        """QUIT if still connected, then close; never raises."""
        if self.smtp.is_connected:
            with contextlib.suppress(SMTPException, OSError, TimeoutError):
                await self.smtp.quit(timeout=QUIT_TIMEOUT_SECONDS)
        self.smtp.close()


class Session:
    """One email's use of the relay: ``send`` returns as soon as the relay
    accepted the message (250 to DATA), so the caller can record the delivery
    first; ``close`` then keeps the connection for the next email, or says
    QUIT (politely, if the session is sound).
    """

    def __init__(self, mailer: Mailer) -> None:
        self._mailer = mailer
        self._connection: Connection | None = None
        self._accepted = False

    @property
    def data_started(self) -> bool:
        """Whether DATA was sent: from then on a failure without a reply leaves it
        unknown whether the relay has the message (RFC 1047, ``reply_lost``)."""
        return self._connection is not None and self._connection.smtp.data_started

    def reply_lost(self, failure: BaseException) -> bool:
        """Whether the relay may have the message after ``failure`` ended the
        send: DATA went out and no reply to it came (a timeout, a dropped
        connection, a cancellation), the gap RFC 1047 cannot close. A reply,
        4xx or 5xx, to DATA or to the final "." is the relay's word that it
        did not take the message: not delivered, nothing to doubt."""
        return self.data_started and not isinstance(failure, SMTPResponseException)

    async def send(self, email: RenderedEmail) -> None:
        """Deliver ``email`` on a kept connection, else on a new one (connected
        with TLS and AUTH as configured).

        Raises aiosmtplib's ``SMTPException`` subclasses or ``OSError``; see
        ``herald_notifier.failures`` for which of them a retry can fix.
        """
        kept = self._mailer._take()
        if kept is not None:
            self._connection = kept
            try:
                await kept.send(email)
            except (SMTPException, OSError):
                if kept.smtp.data_started or kept.smtp.is_connected:
                    raise
                # Gone before DATA: the relay has none of this message.
                kept.smtp.close()
            else:
                self._accepted = True
                return
        self._connection = connection = self._mailer._connection()
        await connection.smtp.connect()
        await connection.send(email)
        self._accepted = True

    async def close(self, *, polite: bool = True) -> None:
        """End the session: keep the connection if the message was accepted,
        else QUIT if ``polite`` and still connected, then close.

        Never raises: the message's fate is decided by then.
        """
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if polite and self._accepted:
            await self._mailer._give_back(connection)
        elif polite:
            await connection.quit()
        else:
            connection.smtp.close()


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

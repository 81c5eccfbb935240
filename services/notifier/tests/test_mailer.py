"""SMTP connections kept between emails: reused, retired, recovered, closed; real relays."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from email.headerregistry import Address
from typing import Any

import pytest
from aiosmtplib import SMTPSenderRefused, SMTPServerDisconnected
from saq import Queue, Status

from herald_notifier.mailer import Mailer
from herald_notifier.render import RenderedEmail, Renderer
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import enqueue
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import LINK_SECRET, welcome_email
from herald_testing.smtp import serve_smtp
from herald_testing.waiting import eventually

SettingsFor = Callable[..., Settings]

RENDERER = Renderer(
    Address("Herald", addr_spec="no-reply@herald.example.org"),
    link_secret=LINK_SECRET,
    verify_url="https://herald.example.org/verify-email",
    reset_url="https://herald.example.org/reset-password",
)


def email_to(address: str) -> RenderedEmail:
    return RENDERER.render(welcome_email(email=address, display_name="Ada"))


class CountingRelay:
    """An aiosmtpd handler that numbers its connections (by their EHLO) and
    records, per accepted message, the connection it came over; QUITs are
    counted. ``on_mail``/``on_data`` may act on the nth MAIL or DATA (from 1)
    instead of the default: ``"drop"`` closes the connection without a reply,
    any other string is the reply."""

    def __init__(self) -> None:
        self.connections = 0
        self.quits = 0
        self.accepted: list[tuple[str, int]] = []
        self.on_mail: dict[int, str] = {}
        self.on_data: dict[int, str] = {}
        self._mails = itertools.count(1)
        self._datas = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_EHLO(  # noqa: N802  (aiosmtpd's hook names)
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # a handler's EHLO hook must, for aiosmtpd
        with self._lock:
            self.connections += 1
            session.number = self.connections
        return responses

    async def handle_MAIL(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        action = self.on_mail.get(next(self._mails))
        if action == "drop":
            server.transport.close()
            return "421 4.3.2 gone"  # never heard: the connection is closed
        if action is not None:
            return action
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        action = self.on_data.get(next(self._datas))
        if action == "drop":
            server.transport.close()
            return "451 4.3.0 gone"  # never heard
        for rcpt in envelope.rcpt_tos:
            self.accepted.append((rcpt, session.number))
        return action or "250 2.0.0 queued"

    async def handle_QUIT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        with self._lock:
            self.quits += 1
        return "221 Bye"

    def over(self, connection: int) -> list[str]:
        """The recipients of the messages accepted over ``connection``."""
        return [rcpt for rcpt, number in self.accepted if number == connection]


async def send(mailer: Mailer, email: RenderedEmail) -> None:
    """One email as the handler sends it: a session, then close."""
    session = mailer.session()
    polite = True
    try:
        await session.send(email)
    except asyncio.CancelledError:
        polite = False
        raise
    finally:
        await session.close(polite=polite)


async def test_one_connection_carries_several_emails(settings_for: SettingsFor) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        for n in range(5):
            await send(mailer, email_to(f"user{n}@example.com"))
        assert mailer.idle == 1
        await mailer.aclose()
        await eventually(lambda: relay.quits == 1, "the QUITs")

    assert relay.connections == 1
    assert relay.over(1) == [f"user{n}@example.com" for n in range(5)]
    assert mailer.idle == 0


async def test_concurrent_sessions_each_keep_their_connection(settings_for: SettingsFor) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port, notifier_concurrency=4))
        for batch in range(3):
            await asyncio.gather(
                *(send(mailer, email_to(f"b{batch}u{n}@example.com")) for n in range(4))
            )
        assert mailer.idle == 4
        await mailer.aclose()
        await eventually(lambda: relay.quits == 4, "the QUITs")

    assert relay.connections == 4
    assert len(relay.accepted) == 12


async def test_a_connection_the_relay_closed_while_idle_is_replaced(
    settings_for: SettingsFor,
) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        await send(mailer, email_to("first@example.com"))
    # The relay went away (a restart) and comes back on the same port.
    with serve_smtp(relay, port):
        await send(mailer, email_to("second@example.com"))
        await mailer.aclose()

    assert relay.connections == 2
    assert (relay.over(1), relay.over(2)) == (["first@example.com"], ["second@example.com"])


@pytest.mark.parametrize("on_mail", ["drop", "421 4.7.0 too many messages on this connection"])
async def test_a_kept_connection_failing_before_data_is_retried_on_a_new_one(
    settings_for: SettingsFor, on_mail: str
) -> None:
    relay = CountingRelay()
    relay.on_mail[2] = on_mail  # the second email's MAIL FROM, on the kept connection
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        await send(mailer, email_to("first@example.com"))
        session = mailer.session()
        await session.send(email_to("second@example.com"))
        await session.close()
        await mailer.aclose()

    # The relay had nothing of the second email before the new connection.
    assert relay.accepted == [("first@example.com", 1), ("second@example.com", 2)]


async def test_a_kept_connection_lost_after_data_is_not_retried(
    settings_for: SettingsFor,
) -> None:
    relay = CountingRelay()
    relay.on_data[2] = "drop"  # the second email's DATA, on the kept connection
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        await send(mailer, email_to("first@example.com"))
        session = mailer.session()
        with pytest.raises(SMTPServerDisconnected):
            await session.send(email_to("second@example.com"))
        # The relay may have it: the caller must leave the claim unconfirmed.
        assert session.data_started
        await session.close()
        await send(mailer, email_to("third@example.com"))
        await mailer.aclose()

    assert relay.connections == 2
    assert relay.accepted == [("first@example.com", 1), ("third@example.com", 2)]


async def test_a_refusal_on_a_kept_connection_is_not_retried_and_drops_it(
    settings_for: SettingsFor,
) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        await send(mailer, email_to("first@example.com"))
        relay.on_mail[2] = "550 5.7.1 sender refused"
        with pytest.raises(SMTPSenderRefused):
            await send(mailer, email_to("nobody@example.com"))
        assert mailer.idle == 0  # a connection that saw a failure is not kept
        await send(mailer, email_to("third@example.com"))
        await mailer.aclose()

    assert relay.connections == 2
    assert relay.accepted == [("first@example.com", 1), ("third@example.com", 2)]


async def test_an_idle_connection_is_retired_with_a_quit(settings_for: SettingsFor) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port, smtp_pool_idle_seconds=0.2))
        await send(mailer, email_to("first@example.com"))
        await asyncio.sleep(0.3)
        await send(mailer, email_to("second@example.com"))
        await eventually(
            lambda: relay.quits == 1, "the QUITs"
        )  # the retired one, off the send path
        await mailer.aclose()
        await eventually(lambda: relay.quits == 2, "the QUITs")

    assert relay.connections == 2


async def test_a_connection_is_closed_after_its_message_limit(settings_for: SettingsFor) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port, smtp_pool_max_messages=2))
        for n in range(5):
            await send(mailer, email_to(f"user{n}@example.com"))
        await mailer.aclose()
        await eventually(lambda: relay.quits == 3, "the QUITs")

    assert [len(relay.over(c)) for c in (1, 2, 3)] == [2, 2, 1]


async def test_pool_size_zero_opens_and_quits_a_connection_per_email(
    settings_for: SettingsFor,
) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port, smtp_pool_size=0))
        for n in range(3):
            await send(mailer, email_to(f"user{n}@example.com"))
            assert mailer.idle == 0
        await eventually(lambda: relay.quits == 3, "the QUITs")

    assert relay.connections == 3


async def test_a_session_ending_after_aclose_quits_its_connection(
    settings_for: SettingsFor,
) -> None:
    relay = CountingRelay()
    with serve_smtp(relay) as port:
        mailer = Mailer(settings_for(smtp_port=port))
        session = mailer.session()
        await session.send(email_to("first@example.com"))
        await mailer.aclose()  # the worker shuts down while this email is in flight
        await session.close()
        await eventually(lambda: relay.quits == 1, "the QUITs")
        assert mailer.idle == 0


def test_the_pool_holds_one_connection_per_job_slot_by_default(
    settings_for: SettingsFor,
) -> None:
    assert Mailer(settings_for(smtp_port=1025, notifier_concurrency=7)).pool_size == 7
    assert Mailer(settings_for(smtp_port=1025, smtp_pool_size=2)).pool_size == 2


async def test_the_worker_reuses_connections_and_quits_them_on_shutdown(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = CountingRelay()
    messages = [welcome_email(email=f"user{n}@example.com") for n in range(6)]
    with serve_smtp(relay) as port:
        settings = settings_for(smtp_port=port, notifier_concurrency=2)
        async with running_worker(build_settings(settings)):
            jobs = [await enqueue(notifier_queue, message) for message in messages]
            done = [await wait_for_job(notifier_queue, job.key, finished) for job in jobs if job]
            quits_while_running = relay.quits
        await eventually(lambda: relay.quits == relay.connections, "the QUITs")

    assert [job.status for job in done] == [Status.COMPLETE] * 6
    assert sorted(rcpt for rcpt, _ in relay.accepted) == sorted(m.email for m in messages)
    assert relay.connections <= 2
    assert quits_while_running == 0


async def test_maildev_receives_emails_sent_over_one_connection(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient
) -> None:
    mailer = Mailer(settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port))
    addresses = [f"kept{n}@example.com" for n in range(3)]
    for address in addresses:
        await send(mailer, email_to(address))
    assert mailer.idle == 1
    await mailer.aclose()

    for address in addresses:
        received = await mailbox.wait_for_email(address)
        assert received["subject"] == "Welcome to Herald"
        assert "Hello Ada," in received["text"]

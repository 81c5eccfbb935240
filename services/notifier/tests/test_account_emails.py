"""The account emails (email verification, password reset, email change...), sent by a real
worker: the link each carries, which never leaves the email, and no header or
recipient but the intended one whatever a job's payload holds."""

from __future__ import annotations

import contextlib
import email
import email.policy
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
import structlog
from saq import Job, Queue, Status
from structlog.testing import capture_logs
from structlog.typing import EventDict

from herald_notifier.dead_letters import DeadLetters
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.failures import failure_of
from herald_notifier.handlers import RESOURCES, Resources, send_email
from herald_notifier.mailer import Mailer
from herald_notifier.render import Renderer, RenderError
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.messages import AccountEmail, PasswordResetEmail
from herald_shared.tasks import (
    SEND_ACCOUNT_EXISTS_EMAIL,
    SEND_EMAIL_CHANGE_EMAIL,
    SEND_EMAIL_CHANGED_EMAIL,
    SEND_PASSWORD_CHANGED_EMAIL,
    SEND_PASSWORD_RESET_EMAIL,
    SEND_SESSION_REUSE_EMAIL,
    SEND_VERIFICATION_EMAIL,
    SEND_WELCOME_EMAIL,
    Task,
    enqueue,
    task_for,
)
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import (
    account_exists_email,
    email_change_email,
    email_changed_email,
    emailed_token,
    link_token,
    password_changed_email,
    password_reset_email,
    session_reuse_email,
    verification_email,
    welcome_email,
    welcome_email_v1,
)
from herald_testing.ports import free_port
from herald_testing.smtp import serve_smtp
from herald_testing.waiting import eventually

SettingsFor = Callable[..., Settings]

VERIFY_URL = "https://accounts.herald.example.org/verify-email"
RESET_URL = "https://accounts.herald.example.org/reset-password"


@dataclass
class Envelope:
    """One message as a relay received it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def parsed(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def head(self) -> bytes:
        return self.content.split(b"\r\n\r\n", 1)[0]


class RecordingRelay:
    """An aiosmtpd handler accepting everything and keeping each envelope."""

    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(
            Envelope(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
        )
        return "250 2.0.0 queued"


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == name]


def capture_logs_with_context() -> contextlib.AbstractContextManager[list[EventDict]]:
    """Captured log entries including contextvars, as the real configuration renders them."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def bodies(message: EmailMessage) -> dict[str, str]:
    return {part.get_content_type(): part.get_content() for part in message.iter_parts()}


def links(body: str) -> list[str]:
    return re.findall(r"https?://[^\s<\"]+", body)


def expected_link(message: AccountEmail) -> str | None:
    """The link ``message``'s email carries from a worker whose pages are
    ``VERIFY_URL`` and ``RESET_URL``, if any: a password reset link opens
    ``RESET_URL``; a verification or email change confirmation link, ``VERIFY_URL``."""
    token = emailed_token(message)
    if token is None:
        return None
    page = RESET_URL if isinstance(message, PasswordResetEmail) else VERIFY_URL
    # The reader's language (every test message here is English) goes in the query.
    return f"{page}?lang={message.reader_locale}#token={token}"


def token_of(message: AccountEmail) -> str:
    """The token of ``message``'s link."""
    token = emailed_token(message)
    assert token is not None
    return token


Send = Callable[[AccountEmail], Awaitable[tuple[dict[str, Any], Job]]]


@pytest.fixture
def send(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> Send:
    """Send a message through a real worker (relay MailDev, pages ``VERIFY_URL`` and
    ``RESET_URL``): the email as MailDev received it, and the finished job."""
    settings = settings_for(
        smtp_host=maildev.smtp_host,
        smtp_port=maildev.smtp_port,
        verify_url=VERIFY_URL,
        reset_url=RESET_URL,
    )

    async def send(message: AccountEmail) -> tuple[dict[str, Any], Job]:
        async with running_worker(build_settings(settings)):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            received = await mailbox.wait_for_email(message.email)
            done = await wait_for_job(notifier_queue, job.key, finished)
        return received, done

    return send


async def everything_stored(redis: aioredis.Redis, namespace: str) -> str:
    """Every key and value in Redis under ``namespace`` (jobs, their results and
    errors, dead letters, delivery records...), as one text."""
    dump = []
    async for key in redis.scan_iter(match=f"*{namespace}*"):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value: Any = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)  # type: ignore[misc]
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)  # type: ignore[misc]
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1)
        elif kind == "set":
            value = await redis.smembers(key)  # type: ignore[misc]
        else:
            value = kind
        dump.append(f"{key!r}: {value!r}")
    assert dump, f"nothing stored under {namespace}"
    return "\n".join(dump)


async def source_of(mailbox: MailDevClient, received: dict[str, Any]) -> EmailMessage:
    parsed = email.message_from_string(
        await mailbox.source(received["id"]), policy=email.policy.default
    )
    assert isinstance(parsed, EmailMessage)
    return parsed


@pytest.mark.parametrize(
    ("make", "subject", "page"),
    [
        (welcome_email, "Welcome to Herald", "/verify-email"),
        (password_reset_email, "Reset your Herald password", "/reset-password"),
        (email_change_email, "Confirm your new email address for Herald", "/verify-email"),
    ],
    ids=["welcome", "password-reset", "email-change"],
)
async def test_a_link_opens_its_configured_page_with_the_token_in_its_fragment(
    send: Send,
    mailbox: MailDevClient,
    make: Callable[..., AccountEmail],
    subject: str,
    page: str,
) -> None:
    message = make(email="ada@example.com", display_name="Ada Lovelace")
    link = expected_link(message)
    assert link is not None

    received, done = await send(message)

    assert (done.function, done.status, done.result) == (
        task_for(message).name,
        Status.COMPLETE,
        "sent",
    )
    assert received["subject"] == subject
    parts = bodies(await source_of(mailbox, received))
    assert links(parts["text/plain"]) == [link]
    # The button's href, and the plain link below it (its href and its text).
    assert links(parts["text/html"]) == [link] * 3
    url = urlsplit(link)
    # Everything a browser sends to a server (and a proxy logs) is token-free.
    assert (url.scheme, url.netloc, url.path, url.query) == (
        "https",
        "accounts.herald.example.org",
        page,
        "lang=en",
    )
    assert url.fragment == f"token={token_of(message)}"
    assert "This link works until " in parts["text/plain"]


async def test_verification_and_reset_tokens_differ_for_one_token_id() -> None:
    """The purpose is part of the token: a reset link's token is never one the
    verify-email endpoint would take, nor the reverse."""
    message = password_reset_email()

    assert link_token(message.reset, purpose="reset_password") != link_token(
        message.reset, purpose="verify_email"
    )


async def test_a_version_1_welcome_still_goes_out_without_a_link(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> None:
    # As a producer from before verification links left it on the queue.
    message = welcome_email_v1(email="grace@example.com", display_name="Grace")
    payload = message.encode()
    del payload["verification"]
    assert payload["schema_version"] == 1
    job = Job(
        function=SEND_WELCOME_EMAIL.name,
        kwargs={"payload": payload},
        key=str(message.message_id),
        retries=5,
    )
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    async with running_worker(build_settings(settings)):
        await notifier_queue.enqueue(job)
        received = await mailbox.wait_for_email("grace@example.com")
        done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert received["subject"] == "Welcome to Herald"
    assert "Hello Grace," in received["text"]
    assert "Welcome to Herald! Your account is ready." in received["text"]
    for body in (received["text"], received["html"]):
        assert "#token=" not in body
        assert "verify-email" not in body


@pytest.mark.parametrize(
    ("make", "subject", "says"),
    [
        (
            lambda: verification_email(reason="requested"),
            "Verify your email address for Herald",
            "Here is the new link you asked for",
        ),
        (
            lambda: verification_email(reason="reminder"),
            "Reminder: verify your email address for Herald",
            "You signed up for Herald but have not confirmed your email address yet.",
        ),
        (
            account_exists_email,
            "Someone tried to sign up for Herald with your address",
            "You already have an account; nothing changed.",
        ),
        (
            password_reset_email,
            "Reset your Herald password",
            "asked to reset the password of your Herald account.",
        ),
        (
            password_changed_email,
            "Your Herald password was changed",
            "Every session signed in before the change was signed out.",
        ),
        (
            email_change_email,
            "Confirm your new email address for Herald",
            "You asked to use this address for your Herald account.",
        ),
        (
            email_changed_email,
            "Your Herald email address was changed",
            "emails about your account now go to the new address.",
        ),
        (
            session_reuse_email,
            "A Herald session was signed out for your safety",
            "so we signed that session out.",
        ),
    ],
    ids=[
        "verification-requested",
        "verification-reminder",
        "account-exists",
        "password-reset",
        "password-changed",
        "email-change",
        "email-changed",
        "session-reuse",
    ],
)
async def test_each_account_email_goes_to_its_recipient_with_its_subject(
    send: Send,
    mailbox: MailDevClient,
    make: Callable[[], AccountEmail],
    subject: str,
    says: str,
) -> None:
    message = make().model_copy(update={"email": "alan@example.com", "display_name": "Alan T."})

    received, done = await send(message)

    assert (done.function, done.status, done.result) == (
        task_for(message).name,
        Status.COMPLETE,
        "sent",
    )
    assert received["to"] == [{"address": "alan@example.com", "name": "Alan T."}]
    assert received["subject"] == subject
    source = await source_of(mailbox, received)
    assert source["Message-ID"] == f"<{message.message_id}@herald.localhost>"
    assert [part.get_content_type() for part in source.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    parts = bodies(source)
    assert "Hello Alan T.," in parts["text/plain"]
    # Paragraphs wrap at 72 columns: read as a reader does.
    assert says in " ".join(parts["text/plain"].split())
    link = expected_link(message)
    assert links(parts["text/plain"]) == ([link] if link is not None else [])
    if link is None:
        assert "#token=" not in parts["text/plain"] + parts["text/html"]


async def test_no_token_in_logs_job_records_or_dead_letters(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    notifier_redis: aioredis.Redis,
    queue_namespace: str,
    dead_letters: DeadLetters,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever becomes of a message with a link (sent, refused by the relay, or
    not renderable), its token and its link appear only in the email."""
    sent = [
        verification_email(email="ada@example.com"),
        password_reset_email(email="bo@example.com"),
        email_change_email(email="cy@example.com"),
    ]
    refused = [
        verification_email(email="nobody@example.com", reason="reminder"),
        password_reset_email(email="nobody@example.com"),
        email_change_email(email="nobody@example.com"),
    ]
    # Valid for the contract, but a non-ASCII local part cannot be sent: render fails.
    unrenderable = [
        welcome_email(email="zoë@example.com"),
        password_reset_email(email="zoë@example.com"),
        email_change_email(email="zoë@example.com"),
    ]
    messages = [*unrenderable, *refused, *sent]
    tokens = [token_of(message) for message in messages]
    relay = RecordingRelay()
    caplog.set_level(logging.DEBUG)

    async def rcpt(
        server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "nobody@example.com":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    relay.handle_RCPT = rcpt  # type: ignore[attr-defined]
    with serve_smtp(relay) as port, capture_logs_with_context() as logs:
        settings = settings_for(smtp_port=port, log_level="DEBUG")
        async with running_worker(build_settings(settings)):
            jobs = []
            for message in messages:
                job = task_for(message).job(message)
                job.retry_delay = 0.0
                await notifier_queue.enqueue(job)
                jobs.append(await wait_for_job(notifier_queue, job.key, finished))

    outcomes = [(job.status, job.result) for job in jobs]
    failed = len(unrenderable) + len(refused)
    assert outcomes == [(Status.FAILED, None)] * failed + [(Status.COMPLETE, "sent")] * len(sent)
    delivered = {envelope.rcpt_tos[0]: envelope for envelope in relay.received}
    assert set(delivered) == {message.email for message in sent}
    for message in sent:
        plain = delivered[message.email].parsed.get_body(("plain",))
        assert plain is not None
        assert token_of(message) in plain.get_content()
    assert [failed["error"] for failed in events(logs, "email.render_failed")] == [
        "email: a non-ASCII local part needs SMTPUTF8, which is not used"
    ] * len(unrenderable)
    letters = await dead_letters.entries()
    assert sorted(letter.kind for letter in letters) == ["rejected"] * len(refused) + [
        "unrenderable"
    ] * len(unrenderable)
    # aiosmtpd (the test's relay, logger "mail.log") logs each DATA line it reads.
    notifier_side = [record for record in caplog.records if not record.name.startswith("mail.")]
    assert any(record.name.startswith("saq") for record in notifier_side)
    places = {
        "structlog": repr(logs),
        "stdlib logging": "\n".join(caplog.handler.format(record) for record in notifier_side),
        "redis": await everything_stored(notifier_redis, queue_namespace),
        "job errors": repr([job.error for job in jobs]),
        "dead letters": repr([letter.to_json() for letter in letters]),
    }
    for token in tokens:
        for place, text in places.items():
            # Part of one too: quoted-printable may have split it across lines.
            assert token[:12] not in text, f"a token in {place}"
    assert "#token=" not in "".join(places.values())


HOSTILE_FIELDS: list[dict[str, str]] = [
    {"display_name": "Ada\r\nBcc: evil@example.com"},
    {"display_name": "Ada\nBcc: evil@example.com"},
    {"display_name": "Ada\rBcc: evil@example.com"},
    {"display_name": "Ada\u2028Bcc: evil@example.com"},
    {"display_name": "Ada\u2029Bcc: evil@example.com"},
    {"display_name": "Ada\x85Bcc: evil@example.com"},
    {"display_name": "Ada\x00Bcc: evil@example.com"},
    {"display_name": "Ada\x0bBcc: evil@example.com"},
    {"display_name": "Ada\x1b[8mevil@example.com"},
    {"display_name": "Ada\u202eevil@example.com"},
    # Printable ASCII, but the stdlib would decode it into a header line break.
    {"display_name": "=?utf-8?q?Ada=0D=0ABcc:_evil=40example.com?="},
    {"email": "ada@example.com\r\nBcc: evil@example.com"},
    {"email": "ada@example.com\nevil@example.com"},
    {"email": "ada@example.com, evil@example.com"},
    {"email": "ada@example.com evil@example.com"},
]
"""Payload fields an attacker writing to Redis directly might try: each must be
refused as malformed before anything is rendered."""


@pytest.mark.parametrize(
    ("task", "make"),
    [
        (SEND_WELCOME_EMAIL, welcome_email),
        (SEND_VERIFICATION_EMAIL, verification_email),
        (SEND_ACCOUNT_EXISTS_EMAIL, account_exists_email),
        (SEND_PASSWORD_RESET_EMAIL, password_reset_email),
        (SEND_PASSWORD_CHANGED_EMAIL, password_changed_email),
        (SEND_EMAIL_CHANGE_EMAIL, email_change_email),
        (SEND_EMAIL_CHANGED_EMAIL, email_changed_email),
        (SEND_SESSION_REUSE_EMAIL, session_reuse_email),
    ],
    ids=lambda value: value.name if isinstance(value, Task) else "",
)
async def test_a_hand_made_job_cannot_add_a_header_or_a_recipient(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    task: Task[Any],
    make: Callable[..., AccountEmail],
) -> None:
    relay = RecordingRelay()
    # Enqueued by hand, bypassing the API and enqueue()'s validation; retryable,
    # so only the notifier's verdict can stop them.
    hostile = [
        Job(
            function=task.name,
            kwargs={"payload": make().encode() | fields},
            retries=5,
            retry_delay=0.0,
        )
        for fields in HOSTILE_FIELDS
    ]
    good = make(email="linus@example.com", display_name="Linus")

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            for job in hostile:
                await notifier_queue.enqueue(job)
            failed = [await wait_for_job(notifier_queue, job.key, finished) for job in hostile]
            # Mail still flows, and it is the only mail: nothing hostile got out.
            await enqueue(notifier_queue, good)
            await eventually(lambda: relay.received, "the good email to arrive")

    assert [(job.status, job.attempts) for job in failed] == [(Status.FAILED, 1)] * len(hostile)
    [delivered] = relay.received
    assert delivered.rcpt_tos == ["linus@example.com"]
    assert b"evil" not in delivered.content
    letters = await dead_letters.entries()
    assert len(letters) == len(hostile)
    for letter in letters:
        assert letter.kind == "malformed"
        assert letter.reason.startswith(f"invalid {task.message.__name__}: ")
        # The reason names the bad field, never its value.
        assert "evil" not in letter.reason


NAMES = [
    'Zoë "Zed" O\'Brien',
    "Ada, Countess of Lovelace",
    "Mallory <evil@example.com>",
    "evil@example.com, Mallory",
    '"evil@example.com"',
    'Zoe\\" <evil@example.com>, "x',
    "Dr. (Who) [x]; y:",
    "山田 太郎",
    "Ωmega 🎉",
    "A" * 100,
]


async def test_display_names_are_encoded_never_split_into_recipients(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = RecordingRelay()
    messages = [
        verification_email(email=f"user{i}@example.com", display_name=name)
        for i, name in enumerate(NAMES)
    ]

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            for message in messages:
                await enqueue(notifier_queue, message)
            await eventually(lambda: len(relay.received) >= len(messages), "every email to arrive")

    by_recipient = {tuple(envelope.rcpt_tos): envelope for envelope in relay.received}
    assert set(by_recipient) == {(message.email,) for message in messages}
    for message in messages:
        envelope = by_recipient[(message.email,)]
        envelope.head.decode("ascii")  # RFC 2047 words, never raw 8-bit
        head_lines = [
            line for line in envelope.head.split(b"\r\n") if not line.startswith((b" ", b"\t"))
        ]
        assert sum(line.lower().startswith(b"to:") for line in head_lines) == 1
        assert not any(line.lower().startswith((b"cc:", b"bcc:")) for line in head_lines)
        assert envelope.parsed["To"].addresses == (
            Address(display_name=message.display_name, addr_spec=message.email),
        )


class BuggyRenderer(Renderer):
    """A renderer with a bug whose error quotes the link, as a careless
    ``raise ValueError(f"... {link}")`` deep in rendering would."""

    def _bodies(self, name: str, locale: str, context: dict[str, Any]) -> tuple[str, str]:
        raise ValueError(f"cannot fold {context['link']}")


@pytest.mark.parametrize(
    "make",
    [verification_email, password_reset_email, email_change_email],
    ids=["verification", "password_reset", "email_change"],
)
async def test_an_error_quoting_the_link_is_reported_by_class_and_place_only(
    settings_for: SettingsFor,
    deliveries: DeliveryRecords,
    make: Callable[[], AccountEmail],
) -> None:
    settings = settings_for(smtp_port=free_port())
    renderer = BuggyRenderer(
        settings.sender,
        link_secret=settings.link_secret,
        verify_url=VERIFY_URL,
        reset_url=RESET_URL,
    )
    message = make()
    token = token_of(message)
    job = task_for(message).job(message)
    ctx = {
        RESOURCES: Resources(renderer=renderer, mailer=Mailer(settings), deliveries=deliveries),
        "job": job,
    }

    with capture_logs_with_context() as logs, pytest.raises(RenderError) as raised:
        await send_email(ctx, message)

    assert re.fullmatch(r"unexpected ValueError at test_account_emails\.py:\d+", str(raised.value))
    # SAQ logs and stores the traceback: the original error must not be chained in.
    assert raised.value.__suppress_context__
    note = failure_of(job)
    assert note is not None
    assert (note["kind"], note["error_class"]) == ("unrenderable", "ValueError")
    assert not job.retryable
    [failed] = events(logs, "email.render_failed")
    assert failed["error_class"] == "ValueError"
    for text in (str(raised.value), repr(note), repr(logs)):
        assert token not in text
        assert "#token=" not in text

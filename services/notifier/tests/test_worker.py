"""The notifier as a running SAQ worker: messages in, emails out, failures retried or not."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import Callable

import structlog
from saq import Job, Queue, Status
from structlog.testing import capture_logs
from structlog.typing import EventDict

from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import SEND_WELCOME_EMAIL, TASKS, enqueue
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port
from herald_testing.smtp import ScriptedRelay, serve_smtp

SettingsFor = Callable[..., Settings]


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == name]


def capture_logs_with_context() -> contextlib.AbstractContextManager[list[EventDict]]:
    """Captured log entries including contextvars, as the real configuration renders them."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def test_the_worker_runs_every_task_of_the_contract(settings_for: SettingsFor) -> None:
    functions = build_settings(settings_for(smtp_port=free_port()))["functions"]

    assert sorted(name for name, _ in functions) == sorted(TASKS)


async def test_welcome_email_arrives_addressed_to_the_user(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> None:
    message = welcome_email(email="ada@example.com", display_name="Ada Lovelace")
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    async with running_worker(build_settings(settings)):
        job = await enqueue(notifier_queue, message)
        assert job is not None
        received = await mailbox.wait_for_email("ada@example.com")
        done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.COMPLETE, 1)
    assert received["to"] == [{"address": "ada@example.com", "name": "Ada Lovelace"}]
    assert received["subject"] == "Welcome to Herald"
    assert "Hello Ada Lovelace," in received["text"]
    assert "Hello Ada Lovelace," in received["html"]
    source = email.message_from_string(
        await mailbox.source(received["id"]), policy=email.policy.default
    )
    assert source["Message-ID"] == f"<{message.message_id}@herald.localhost>"
    assert source["From"] == "Herald <no-reply@herald.localhost>"
    assert source.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in source.iter_parts()] == ["text/plain", "text/html"]


async def test_temporary_refusal_is_retried_and_delivers_once(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = ScriptedRelay(["451 4.3.0 try later"])
    message = welcome_email(email="grace@example.com", display_name="Grace Hopper")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retry_delay = 0.0

    with serve_smtp(relay) as port, capture_logs_with_context() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            await notifier_queue.enqueue(job)
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.COMPLETE, 2)
    assert [str(m["To"]) for m in relay.received] == ["Grace Hopper <grace@example.com>"]
    [deferred] = events(logs, "email.deferred")
    assert deferred["log_level"] == "warning"
    assert deferred["message_id"] == str(message.message_id)
    assert deferred["attempt"] == 1
    assert deferred["smtp_code"] == 451
    [sent] = events(logs, "email.sent")
    assert (sent["attempt"], sent["recipient_domain"]) == (2, "example.com")
    assert "grace@example.com" not in repr(sent)


async def test_unreachable_relay_leaves_the_job_queued_for_retry(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    closed_port = free_port()
    message = welcome_email(email="alan@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    # A fixed, long delay keeps the retry from running inside the test.
    job.retry_delay = 60.0
    job.retry_backoff = False

    with capture_logs_with_context() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=closed_port))):
            await notifier_queue.enqueue(job)
            retried = await wait_for_job(
                notifier_queue, job.key, lambda j: j.attempts == 1 and j.status == Status.QUEUED
            )

    assert retried.retries == SEND_WELCOME_EMAIL.retries
    assert retried.error is not None
    assert "SMTPConnectError" in retried.error
    [deferred] = events(logs, "email.deferred")
    assert deferred["message_id"] == str(message.message_id)
    assert deferred["attempt"] == 1


async def test_transient_failures_give_up_after_the_last_attempt(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    message = welcome_email(email="barbara@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retries = 3
    job.retry_delay = 0.0

    with capture_logs_with_context() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=free_port()))):
            await notifier_queue.enqueue(job)
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.FAILED, 3)
    assert [e["attempt"] for e in events(logs, "email.deferred")] == [1, 2]
    [failed] = events(logs, "email.failed")
    assert (failed["log_level"], failed["attempt"]) == ("error", 3)


async def test_permanent_refusal_fails_the_job_at_once(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    # Only the first RCPT is refused: a wrongful retry would deliver and show up.
    relay = ScriptedRelay(["550 5.1.1 <nobody@example.com>: no such user"])
    message = welcome_email(email="nobody@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retry_delay = 0.0

    with serve_smtp(relay) as port, capture_logs_with_context() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            await notifier_queue.enqueue(job)
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert relay.received == []
    [rejected] = events(logs, "email.rejected")
    assert rejected["log_level"] == "error"
    assert rejected["message_id"] == str(message.message_id)
    assert rejected["smtp_code"] == 550
    assert "nobody@example.com" not in repr(rejected)


async def test_malformed_payload_fails_alone_and_later_mail_still_flows(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> None:
    bad = Job(
        function=SEND_WELCOME_EMAIL.name,
        kwargs={"payload": welcome_email().encode() | {"email": "not-an-address"}},
        # Retryable on purpose: only the notifier's own verdict may stop it.
        retries=5,
        retry_delay=0.0,
    )
    good = welcome_email(email="linus@example.com", display_name="Linus")
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    async with running_worker(build_settings(settings)):
        await notifier_queue.enqueue(bad)
        failed = await wait_for_job(notifier_queue, bad.key, finished)
        await enqueue(notifier_queue, good)
        received = await mailbox.wait_for_email("linus@example.com")

    assert (failed.status, failed.attempts) == (Status.FAILED, 1)
    assert failed.error is not None
    assert "invalid WelcomeEmail: email:" in failed.error
    assert received["to"] == [{"address": "linus@example.com", "name": "Linus"}]


async def test_a_stopping_worker_takes_no_new_job_and_another_sends_it_once(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    """SIGTERM sets the worker's event, then SAQ waits out the grace period with
    its idle slots still dequeuing: a job taken then would be cut mid-send at the
    deadline and sent again. The stopping worker gives it back instead."""
    relay = ScriptedRelay([])
    with serve_smtp(relay) as port:
        settings = settings_for(smtp_port=port)
        stopping_settings = settings.model_copy(update={"notifier_shutdown_grace_seconds": 2})
        async with running_worker(build_settings(stopping_settings)) as stopping:
            await asyncio.sleep(0.3)  # its slots are waiting in BLMOVE
            stopping.event.set()  # what SAQ's SIGTERM handler does
            message = welcome_email(email="late@example.com")
            with capture_logs() as logs:
                job = await enqueue(notifier_queue, message)
                assert job is not None
                await asyncio.sleep(0.5)
            during_grace = await notifier_queue.job(job.key)
            async with running_worker(build_settings(settings)) as other:
                done = await wait_for_job(notifier_queue, job.key, finished)

    assert during_grace is not None
    assert (during_grace.status, during_grace.attempts) == (Status.QUEUED, 0)
    assert events(logs, "job.given_back"), "the stopping worker never received the job"
    assert (done.status, done.attempts, done.worker_id) == (Status.COMPLETE, 1, other.id)
    assert len(relay.received) == 1

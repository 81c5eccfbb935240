"""Emails whose link expired before an attempt could send them, by a real worker:
never sent (a dead link helps no one), the job complete as ``link_expired``
with no retry and no dead letter, counted, and logged without the address or
the token; emails with a live link, or with none, still go out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from prometheus_client import REGISTRY
from saq import Job, Queue, Status
from structlog.testing import capture_logs

from herald_notifier.catalogue import link_of
from herald_notifier.dead_letters import DeadLetters, replay
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.messages import AccountEmail
from herald_shared.tasks import enqueue, task_for
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.messages import (
    account_exists_email,
    email_change_email,
    email_changed_email,
    emailed_token,
    password_changed_email,
    password_reset_email,
    verification_email,
    verification_link,
    welcome_email,
    welcome_email_v1,
)
from herald_testing.smtp import ScriptedRelay, serve_smtp

SettingsFor = Callable[..., Settings]

EXPIRED = timedelta(minutes=-5)
"""A link that expired five minutes before the test."""


def skipped() -> float:
    return (
        REGISTRY.get_sample_value(
            "herald_notifier_emails_skipped_total", {"reason": "link_expired"}
        )
        or 0.0
    )


def with_link(make: Callable[..., AccountEmail], valid_for: timedelta, **fields: Any) -> Any:
    """A message of ``make``'s kind whose link expires ``valid_for`` from now."""
    field = LINK_FIELDS.get(make, "verification")
    return make(**{field: verification_link(valid_for=valid_for)}, **fields)


LINK_FIELDS: dict[Callable[..., AccountEmail], str] = {
    password_reset_email: "reset",
    email_change_email: "confirmation",
}
"""The link field of each kind with a link but ``verification``."""


def delivered_to(relay: ScriptedRelay) -> list[str]:
    return [message["To"].addresses[0].addr_spec for message in relay.received]


async def run_to_the_end(queue: Queue, message: AccountEmail) -> Job:
    job = await enqueue(queue, message)
    assert job is not None
    return await wait_for_job(queue, job.key, finished)


LINKED = pytest.mark.parametrize(
    "make",
    [welcome_email, verification_email, password_reset_email, email_change_email],
    ids=["welcome-v2", "verification", "password-reset", "email-change"],
)


@LINKED
async def test_an_email_whose_link_expired_is_not_sent_and_its_job_completes(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    deliveries: DeliveryRecords,
    make: Callable[..., AccountEmail],
) -> None:
    late = with_link(make, EXPIRED, email="late@example.com")
    # The control: the same kind of email with a live link, sent by the same worker.
    fresh = with_link(make, timedelta(minutes=30), email="fresh@example.com")
    relay = ScriptedRelay()
    before = skipped()

    with (
        serve_smtp(relay) as port,
        capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs,
    ):
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            not_sent = await run_to_the_end(notifier_queue, late)
            sent = await run_to_the_end(notifier_queue, fresh)

    assert (not_sent.function, not_sent.status, not_sent.result, not_sent.attempts) == (
        task_for(late).name,
        Status.COMPLETE,
        "link_expired",
        1,
    )
    assert (sent.status, sent.result) == (Status.COMPLETE, "sent")
    assert delivered_to(relay) == ["fresh@example.com"]
    assert await dead_letters.entries() == []
    # Skipped before any delivery claim, and recorded so: the record settles its outbox
    # row once the job is gone.
    assert await deliveries.record(late.message_id) == "skipped:"
    assert skipped() == before + 1
    [entry] = [entry for entry in logs if entry["event"] == "email.skipped"]
    link = link_of(late)
    assert link is not None
    assert entry["log_level"] == "info"
    assert entry["message_id"] == str(late.message_id)
    assert (entry["reason"], entry["recipient_domain"], entry["expires_at"]) == (
        "link_expired",
        "example.com",
        link.expires_at.isoformat(),
    )
    everything = repr(logs)
    token = emailed_token(late)
    assert token is not None
    assert "late@example.com" not in everything
    assert token not in everything
    assert str(link.token_id) not in everything


async def test_a_dead_letter_replayed_after_its_link_expired_is_not_sent(
    settings_for: SettingsFor, notifier_queue: Queue, dead_letters: DeadLetters
) -> None:
    # Refused for good while its link was live (say, a mailbox not created yet),
    # replayed by an operator once the link had expired.
    relay = ScriptedRelay(["550 5.1.1 no such user"])
    message = with_link(password_reset_email, timedelta(seconds=3), email="grace@example.com")
    link = link_of(message)
    assert link is not None
    before = skipped()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            refused = await run_to_the_end(notifier_queue, message)
            [letter] = await dead_letters.entries()
            await asyncio.sleep((link.expires_at - datetime.now(UTC)).total_seconds() + 0.05)
            [replayed] = await replay(dead_letters, notifier_queue, [letter.message_id])
            done = await wait_for_job(
                notifier_queue, refused.key, lambda job: job.status == Status.COMPLETE
            )

    assert (refused.status, letter.kind) == (Status.FAILED, "rejected")
    assert replayed.replayed
    assert (done.result, done.attempts) == ("link_expired", 1)
    assert relay.received == []
    assert await dead_letters.entries() == []
    assert skipped() == before + 1


@pytest.mark.parametrize(
    "make",
    [welcome_email_v1, account_exists_email, password_changed_email, email_changed_email],
    ids=["welcome-v1", "account-exists", "password-changed", "email-changed"],
)
async def test_an_email_without_a_link_is_sent_however_old(
    settings_for: SettingsFor, notifier_queue: Queue, make: Callable[..., AccountEmail]
) -> None:
    # As a dead letter replayed days later would be.
    message = make(email="ken@example.com", requested_at=datetime.now(UTC) - timedelta(days=3))
    assert link_of(message) is None
    relay = ScriptedRelay()
    before = skipped()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            done = await run_to_the_end(notifier_queue, message)

    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert delivered_to(relay) == ["ken@example.com"]
    assert skipped() == before

"""Never lost, never doubled: real workers, real Redis, real SMTP servers.

Redelivery, racing workers, a SIGKILLed worker, a long send kept alive by its
heartbeat, SIGTERM mid-send, an attempt that lost its job, a worker taken for
dead that finishes late, and what a reply (or none) to DATA means for duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import structlog
from prometheus_client import REGISTRY
from saq import Queue, Status
from saq.utils import now
from structlog.testing import capture_logs
from structlog.typing import EventDict

from herald_notifier.delivery import DeliveryRecords
from herald_notifier.queue import NotifierQueue
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import SEND_WELCOME_EMAIL, enqueue
from herald_testing.jobs import FINISHED_JOB_SECONDS, finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import LINK_SECRET, welcome_email
from herald_testing.smtp import serve_smtp
from herald_testing.waiting import eventually

SettingsFor = Callable[..., Settings]

HELD_FOR = 30.0
"""Longest the relay holds a session (the tests release it sooner)."""


class HoldingRelay:
    """An aiosmtpd handler that holds the first ``holds`` sessions at RCPT or
    DATA until the test releases them, and accepts everything else.

    A message is recorded as soon as its DATA is in, even if its client is
    gone before the reply: the relay has the whole message (RFC 1047).
    """

    def __init__(self, at: Literal["rcpt", "data"] = "data", *, holds: int = 1) -> None:
        self.at = at
        self.holds = holds
        self.held = threading.Event()
        self.release = threading.Event()
        self.received: list[bytes] = []

    async def _maybe_hold(self, phase: str) -> None:
        if phase == self.at and self.holds > 0:
            self.holds -= 1
            self.held.set()
            await asyncio.to_thread(self.release.wait, HELD_FOR)

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook name)
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        await self._maybe_hold("rcpt")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        # Kept as soon as it is in, reply or not: the relay that delivers a
        # message whose sender vanished before the 250 (RFC 1047's worst case).
        self.received.append(envelope.content)
        await self._maybe_hold("data")
        return "250 2.0.0 queued"


@contextlib.contextmanager
def relaying(handler: HoldingRelay) -> Iterator[int]:
    with serve_smtp(handler) as port:
        try:
            yield port
        finally:
            handler.release.set()


@contextlib.asynccontextmanager
async def notifier_process(
    redis_url: str, queue_namespace: str, smtp_port: int, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``python -m herald_notifier`` on this test's queue; killed if still running."""
    environment = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_SMTP_PORT": str(smtp_port),
        "HERALD_LOG_FORMAT": "json",
        "HERALD_METRICS_PORT": "0",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "0",
        "HERALD_NOTIFIER_FINISHED_JOB_SECONDS": str(FINISHED_JOB_SECONDS),
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_notifier",
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def message_ids(received: list[bytes]) -> list[str]:
    return [
        str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])
        for raw in received
    ]


def events(logs: list[EventDict], name: str) -> list[EventDict]:
    return [entry for entry in logs if entry["event"] == name]


def captured() -> contextlib.AbstractContextManager[list[EventDict]]:
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


async def test_a_redelivered_sent_message_sends_nothing_and_completes(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> None:
    message = welcome_email(email="ada@example.com")
    suppressed = value("herald_notifier_duplicates_suppressed_total")
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    with captured() as logs:
        async with running_worker(build_settings(settings)):
            first = await enqueue(notifier_queue, message)
            assert first is not None
            await mailbox.wait_for_email("ada@example.com")
            sent = await wait_for_job(notifier_queue, first.key, finished)
            # The API's outbox may push a message twice; the job key is free again.
            again = await enqueue(notifier_queue, message)
            assert again is not None
            redelivered = await wait_for_job(notifier_queue, again.key, finished)

    assert (sent.status, sent.result) == (Status.COMPLETE, "sent")
    assert (redelivered.status, redelivered.result) == (Status.COMPLETE, "duplicate_suppressed")
    assert redelivered.attempts == 1
    assert len(await mailbox.emails_to("ada@example.com")) == 1
    assert value("herald_notifier_duplicates_suppressed_total") == suppressed + 1
    [event] = events(logs, "email.duplicate_suppressed")
    assert event["message_id"] == str(message.message_id)
    assert event["record"].startswith("sent:")


async def test_two_workers_racing_on_one_message_send_it_once(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = HoldingRelay("data")
    message = welcome_email(email="grace@example.com")
    # Two jobs of one message under different keys (SAQ's key dedup cannot help).
    jobs = [SEND_WELCOME_EMAIL.job(message), SEND_WELCOME_EMAIL.job(message)]
    jobs[1].key = f"{message.message_id}-again"
    for job in jobs:
        job.retry_delay = 0.2
    conflicts = value("herald_notifier_delivery_claim_conflicts_total")

    with relaying(relay) as port:
        settings = settings_for(smtp_port=port, notifier_concurrency=1)
        async with (
            running_worker(build_settings(settings)),
            running_worker(build_settings(settings)),
        ):
            for job in jobs:
                await notifier_queue.enqueue(job)
            await eventually(relay.held.is_set, "one worker to be inside DATA")
            # The other worker meets the live claim (and backs off) while DATA is held.
            await eventually(
                lambda: value("herald_notifier_delivery_claim_conflicts_total") > conflicts,
                "the other worker to meet the claim",
            )
            relay.release.set()
            done = [await wait_for_job(notifier_queue, job.key, finished) for job in jobs]

    assert [job.status for job in done] == [Status.COMPLETE, Status.COMPLETE]
    assert sorted(str(job.result) for job in done) == ["duplicate_suppressed", "sent"]
    assert len(relay.received) == 1


async def test_a_sigkilled_worker_mid_data_is_recovered_by_another_within_the_bound(
    redis_url: str, queue_namespace: str, settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    heartbeat, sweep, backoff, schedule = 2, 1, 1.0, 1.0
    # herald_notifier.worker: heartbeat + sweep + backoff(1) + schedule.
    bound = heartbeat + sweep + backoff + schedule
    relay = HoldingRelay("data")
    message = welcome_email(email="linus@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.heartbeat = heartbeat
    crashes = value("herald_notifier_possible_duplicates_total", cause="crash")

    with relaying(relay) as port:
        sweeping = {"HERALD_NOTIFIER_SWEEP_SECONDS": str(sweep)}
        async with notifier_process(redis_url, queue_namespace, port, **sweeping) as doomed:
            await notifier_queue.enqueue(job)
            await eventually(relay.held.is_set, "the doomed worker to be inside DATA", within=15)
            doomed.kill()
            await doomed.wait()
            killed = time.monotonic()

        settings = settings_for(smtp_port=port, notifier_sweep_seconds=sweep)
        with captured() as logs:
            async with running_worker(build_settings(settings)):
                # Send time and the second worker's start-up are the slack.
                done = await wait_for_job(notifier_queue, job.key, finished, within=bound + 3)
                recovered = time.monotonic() - killed

    print(f"\n[sigkill] job completed by the second worker {recovered:.2f} s after the kill")
    assert (done.status, done.attempts, done.result) == (Status.COMPLETE, 2, "sent")
    assert value("herald_notifier_possible_duplicates_total", cause="crash") == crashes + 1
    [redelivered] = events(logs, "email.redelivered_after_crash")
    assert redelivered["message_id"] == str(message.message_id)
    assert redelivered["previous"].startswith("claimed:")
    # Twice, as counted: the relay had the first copy when the worker died (RFC
    # 1047). Both carry the same Message-ID, so a mail client can collapse them.
    assert message_ids(relay.received) == [f"<{message.message_id}@herald.localhost>"] * 2


async def test_a_long_send_is_not_swept_while_its_heartbeat_is_fresh(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = HoldingRelay("data")
    job = SEND_WELCOME_EMAIL.job(welcome_email(email="alan@example.com"))
    job.heartbeat = 1  # stuck after 1 s untouched; the sweeper looks every second

    with relaying(relay) as port:
        settings = settings_for(smtp_port=port, notifier_sweep_seconds=1)
        async with running_worker(build_settings(settings)):
            await notifier_queue.enqueue(job)
            await eventually(relay.held.is_set, "the send to be inside DATA")
            touches: set[int] = set()

            async def touched_thrice() -> bool:
                stored = await notifier_queue.job(job.key)
                assert stored is not None
                assert stored.status == Status.ACTIVE, "swept while alive"
                touches.add(stored.touched)
                return len(touches) > 3

            async with asyncio.timeout(10):
                while True:
                    if await touched_thrice():
                        break
                    await asyncio.sleep(0.1)
            relay.release.set()
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.COMPLETE, 1)
    assert len(relay.received) == 1


async def test_sigterm_mid_send_requeues_without_spending_an_attempt_and_frees_the_message(
    redis_url: str,
    queue_namespace: str,
    settings_for: SettingsFor,
    notifier_queue: Queue,
    deliveries: DeliveryRecords,
) -> None:
    relay = HoldingRelay("rcpt")
    message = welcome_email(email="edsger@example.com")
    job = SEND_WELCOME_EMAIL.job(message)

    with relaying(relay) as port:
        async with notifier_process(redis_url, queue_namespace, port) as notifier:
            await notifier_queue.enqueue(job)
            await eventually(relay.held.is_set, "the send to start", within=15)
            notifier.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(notifier.wait(), timeout=15) == 0

        requeued = await notifier_queue.job(job.key)
        record = await deliveries.record(message.message_id)
        relay.release.set()
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.error) == (Status.QUEUED, 0, "cancelled")
    assert record is None  # released: the next worker need not wait for the lease
    assert (done.status, done.attempts) == (Status.COMPLETE, 1)
    assert len(relay.received) == 1


async def test_sigterm_while_data_awaits_its_reply_counts_the_resend_as_possible_duplicate(
    redis_url: str,
    queue_namespace: str,
    settings_for: SettingsFor,
    notifier_queue: Queue,
    deliveries: DeliveryRecords,
) -> None:
    relay = HoldingRelay("data")
    message = welcome_email(email="barbara@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    unconfirmed = value("herald_notifier_possible_duplicates_total", cause="unconfirmed")

    with relaying(relay) as port:
        async with notifier_process(redis_url, queue_namespace, port) as notifier:
            await notifier_queue.enqueue(job)
            await eventually(relay.held.is_set, "DATA to be sent", within=15)
            notifier.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(notifier.wait(), timeout=15) == 0

        record = await deliveries.record(message.message_id)
        with captured() as logs:
            async with running_worker(build_settings(settings_for(smtp_port=port))):
                done = await wait_for_job(notifier_queue, job.key, finished)

    assert len(relay.received) == 2
    assert record is not None
    assert record.startswith("unconfirmed:")
    assert (done.status, done.attempts) == (Status.COMPLETE, 1)
    assert value("herald_notifier_possible_duplicates_total", cause="unconfirmed") == (
        unconfirmed + 1
    )
    assert len(events(logs, "email.redelivered_unconfirmed")) == 1


async def test_an_attempt_whose_job_was_handed_on_stops_and_leaves_the_job_alone(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = HoldingRelay("data")
    job = SEND_WELCOME_EMAIL.job(welcome_email(email="ken@example.com"))
    job.heartbeat = 1
    job.retry_delay = 0.1

    with relaying(relay) as port:
        # A sweeper that never runs: the test plays it.
        settings = settings_for(smtp_port=port, notifier_sweep_seconds=60)
        with captured() as logs:
            async with running_worker(build_settings(settings)):
                await notifier_queue.enqueue(job)
                await eventually(relay.held.is_set, "the send to be inside DATA")
                # What a sweeper does with a job it took for stuck: re-queue it.
                stored = await notifier_queue.job(job.key)
                assert stored is not None
                await notifier_queue.retry(stored, "swept")
                done = await wait_for_job(notifier_queue, job.key, finished)

    assert len(relay.received) == 2
    [lost] = events(logs, "job.lease_lost")
    assert lost["job_key"] == job.key
    assert done.status == Status.COMPLETE
    assert done.attempts >= 2
    # The handed-on attempt sent; the lost one had sent DATA: a possible duplicate.
    assert [e["cause"] for e in events(logs, "job.cancelled")] == ["lost"]
    assert len(events(logs, "email.redelivered_unconfirmed")) == 1


class DataReplies:
    """An aiosmtpd handler answering the first DATA (after the whole message is
    in) from ``first``: an SMTP reply, or ``"drop"`` to close the connection
    without one; every later DATA is accepted. ``got`` has every message the
    relay received in full, ``accepted`` those it answered 250."""

    def __init__(self, first: str) -> None:
        self.first: str | None = first
        self.got: list[bytes] = []
        self.accepted: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.got.append(envelope.content)
        reply, self.first = self.first, None
        if reply == "drop":
            server.transport.close()
            return "250 2.0.0 never heard"
        if reply is not None:
            return reply
        self.accepted.append(envelope.content)
        return "250 2.0.0 queued"


def possible_duplicates() -> float:
    return sum(
        value("herald_notifier_possible_duplicates_total", cause=cause)
        for cause in ("crash", "unconfirmed")
    )


async def test_a_4xx_reply_to_data_is_a_refusal_retried_without_a_possible_duplicate(
    settings_for: SettingsFor, notifier_queue: Queue, deliveries: DeliveryRecords
) -> None:
    relay = DataReplies("451 4.3.0 queue full, try again later")
    message = welcome_email(email="hedy@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retry_delay = 0.1
    doubts = possible_duplicates()

    with serve_smtp(relay) as port, captured() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            await notifier_queue.enqueue(job)
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts, done.result) == (Status.COMPLETE, 2, "sent")
    assert len(relay.accepted) == 1
    assert possible_duplicates() == doubts
    assert events(logs, "email.outcome_unknown") == []
    assert events(logs, "email.redelivered_unconfirmed") == []
    [deferred] = events(logs, "email.deferred")
    assert deferred["smtp_code"] == 451
    record = await deliveries.record(message.message_id)
    assert record is not None
    assert record.startswith("sent:")


async def test_a_5xx_reply_to_data_releases_the_message_for_a_replay(
    settings_for: SettingsFor, notifier_queue: Queue, deliveries: DeliveryRecords
) -> None:
    relay = DataReplies("554 5.6.0 message refused")
    message = welcome_email(email="katherine@example.com")
    doubts = possible_duplicates()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert relay.accepted == []
    assert possible_duplicates() == doubts
    # Released, not unconfirmed: a replay sends at once and counts no duplicate.
    assert await deliveries.record(message.message_id) is None


async def test_a_connection_dropped_after_the_data_makes_the_resend_a_possible_duplicate(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = DataReplies("drop")
    message = welcome_email(email="margaret@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retry_delay = 0.1
    unconfirmed = value("herald_notifier_possible_duplicates_total", cause="unconfirmed")

    with serve_smtp(relay) as port, captured() as logs:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            await notifier_queue.enqueue(job)
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.attempts, done.result) == (Status.COMPLETE, 2, "sent")
    # The relay had the whole message both times: it may deliver both.
    assert len(relay.got) == 2
    assert value("herald_notifier_possible_duplicates_total", cause="unconfirmed") == (
        unconfirmed + 1
    )
    assert len(events(logs, "email.outcome_unknown")) == 1
    assert len(events(logs, "email.redelivered_unconfirmed")) == 1


async def test_a_worker_taken_for_dead_that_finishes_late_leaves_the_requeued_job_to_run_once(
    redis_url: str, settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    relay = HoldingRelay("data")
    job = SEND_WELCOME_EMAIL.job(welcome_email(email="frances@example.com"))
    job.heartbeat = 30  # its next beat is 10 s away: it cannot notice the sweep in time
    job.retry_delay = 0.1
    refused = value("herald_notifier_stale_attempt_writes_total", op="finish")
    sweeper = NotifierQueue.connect_url(
        redis_url, name=notifier_queue.name, finished_job_seconds=FINISHED_JOB_SECONDS
    )
    await sweeper.connect()

    with relaying(relay) as port, captured() as logs:
        settings = settings_for(smtp_port=port, notifier_sweep_seconds=60)
        try:
            async with running_worker(build_settings(settings)):
                await notifier_queue.enqueue(job)
                await eventually(relay.held.is_set, "the send to be inside DATA")
                # Its event loop stalled, say: untouched for a minute, it looks dead.
                running = await sweeper.job(job.key)
                assert running is not None
                running.touched = now() - 60_000
                await sweeper.redis.set(running.id, sweeper.serialize(running))
                await sweeper.redis.delete(f"saq:{sweeper.name}:sweep")
                assert await sweeper.sweep(lock=1) == [running.id]
                # ...but it was alive: the relay's 250 comes, the attempt ends.
                relay.release.set()
                done = await wait_for_job(
                    notifier_queue, job.key, lambda j: finished(j) and j.attempts == 2
                )
        finally:
            await sweeper.disconnect()

    # The late finish was refused, so the re-queued job ran, found it sent, sent nothing.
    assert value("herald_notifier_stale_attempt_writes_total", op="finish") == refused + 1
    assert len(events(logs, "job.stale_attempt_write_refused")) == 1
    assert (done.status, done.result) == (Status.COMPLETE, "duplicate_suppressed")
    assert len(relay.received) == 1

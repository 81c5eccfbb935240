"""Dead letters: every way a job fails for good lands in the store, and an
operator lists and replays them with ``herald-notifier dead-letters``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable

from prometheus_client import REGISTRY
from saq import Job, Queue, Status
from saq.utils import now

from herald_notifier.dead_letters import DeadLetter, DeadLetters
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.queue import NotifierQueue
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import SEND_WELCOME_EMAIL, enqueue
from herald_testing.jobs import FINISHED_JOB_SECONDS, finished, running_worker, wait_for_job
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import LINK_SECRET, welcome_email
from herald_testing.ports import free_port
from herald_testing.smtp import ScriptedRelay, serve_smtp
from herald_testing.waiting import eventually

SettingsFor = Callable[..., Settings]
TASK = SEND_WELCOME_EMAIL.name


def complete(job: Job) -> bool:
    return job.status == Status.COMPLETE


def dead_lettered(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "herald_notifier_dead_letters_total", {"task": TASK, "reason": reason}
        )
        or 0.0
    )


async def counted(expected: float, reason: str) -> None:
    """Wait, with the worker still running, until the dead-letter counter reads ``expected``.

    The job reads as failed in Redis a moment before the worker counts it, and the
    tests' worker stops without a grace period: asserting after it stops is a race.
    """
    await eventually(
        lambda: dead_lettered(reason) == expected, f"herald_notifier_dead_letters_total{{{reason}}}"
    )


async def one_letter(store: DeadLetters) -> DeadLetter:
    [letter] = await store.entries()
    return letter


async def test_a_permanent_refusal_is_tried_once_and_dead_lettered_with_its_reason(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    deliveries: DeliveryRecords,
) -> None:
    relay = ScriptedRelay(["550 5.1.1 <nobody@example.com>: no such user"])
    message = welcome_email(email="nobody@example.com")
    before = dead_lettered("rejected")

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            done = await wait_for_job(notifier_queue, job.key, finished)
            await counted(before + 1, "rejected")

    letter = await one_letter(dead_letters)
    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert relay.received == []
    assert letter.message_id == str(message.message_id)
    assert (letter.task, letter.kind, letter.attempts) == (TASK, "rejected", 1)
    assert letter.reason == "SMTP 550: 5.1.1 <recipient>: no such user"
    assert letter.error_class == "SMTPRecipientsRefused"
    assert letter.payload == message.encode()
    assert letter.job_key == job.key
    # The claim was released: a replay may send at once.
    assert await deliveries.record(message.message_id) is None


async def test_a_job_out_of_retries_is_dead_lettered_with_its_last_error(
    settings_for: SettingsFor, notifier_queue: Queue, dead_letters: DeadLetters
) -> None:
    message = welcome_email(email="barbara@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retries = 3
    job.retry_delay = 0.0
    before = dead_lettered("retries_exhausted")

    async with running_worker(build_settings(settings_for(smtp_port=free_port()))):
        await notifier_queue.enqueue(job)
        done = await wait_for_job(notifier_queue, job.key, finished)
        await counted(before + 1, "retries_exhausted")

    letter = await one_letter(dead_letters)
    assert (done.status, done.attempts) == (Status.FAILED, 3)
    assert (letter.kind, letter.attempts, letter.error_class) == (
        "retries_exhausted",
        3,
        "SMTPConnectError",
    )
    assert letter.reason.startswith("retries exhausted after 3 attempts; last: ")
    assert "127.0.0.1" in letter.reason


async def test_a_job_timing_out_on_its_last_attempt_is_dead_lettered(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    deliveries: DeliveryRecords,
) -> None:
    relay = ScriptedRelay(hold_data=True)
    message = welcome_email(email="alan@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.timeout = 1
    job.retries = 1

    with serve_smtp(relay) as port:
        try:
            async with running_worker(build_settings(settings_for(smtp_port=port))):
                await notifier_queue.enqueue(job)
                done = await wait_for_job(notifier_queue, job.key, finished)
        finally:
            relay.release.set()

    letter = await one_letter(dead_letters)
    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert letter.reason == "retries exhausted after 1 attempt; last: timed out after 1 s"
    assert letter.error_class == "TimeoutError"
    # DATA went out and no reply came: a resend would be a possible duplicate.
    record = await deliveries.record(message.message_id)
    assert record is not None
    assert record.startswith("unconfirmed:")


async def test_malformed_payloads_are_dead_lettered_and_later_mail_still_flows(
    settings_for: SettingsFor,
    maildev: MailDev,
    mailbox: MailDevClient,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
) -> None:
    message_id = str(uuid.uuid4())
    bad_payload = welcome_email(message_id=message_id).encode() | {"user_id": "not-a-uuid"}
    # Retryable on purpose: only the notifier's own verdict may stop them.
    bad = Job(function=TASK, kwargs={"payload": bad_payload}, retries=5)
    garbage = Job(function=TASK, kwargs={"payload": ["not", "a", "message"]}, retries=5)
    before = dead_lettered("malformed")
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    async with running_worker(build_settings(settings)):
        for job in (bad, garbage):
            await notifier_queue.enqueue(job)
        failed = [await wait_for_job(notifier_queue, job.key, finished) for job in (bad, garbage)]
        await enqueue(notifier_queue, welcome_email(email="linus@example.com"))
        await mailbox.wait_for_email("linus@example.com")
        await counted(before + 2, "malformed")

    assert [(job.status, job.attempts) for job in failed] == [(Status.FAILED, 1)] * 2
    letters = {letter.message_id: letter for letter in await dead_letters.entries()}
    # Keyed by the message id when the payload has a readable one, else by the job key.
    assert set(letters) == {message_id, garbage.key}
    named = letters[message_id]
    assert named.kind == "malformed"
    assert named.reason.startswith("invalid WelcomeEmail: user_id: ")
    assert named.error_class == "MessageError"
    assert named.payload == bad_payload
    assert named.attempts == 1
    shapeless = letters[garbage.key]
    assert shapeless.reason == "invalid WelcomeEmail: payload must be an object, got list"
    assert shapeless.payload == ["not", "a", "message"]


async def test_a_job_swept_with_no_attempt_left_is_dead_lettered_as_stuck(
    redis_url: str, notifier_queue: Queue, dead_letters: DeadLetters
) -> None:
    queue = NotifierQueue.connect_url(
        redis_url, name=notifier_queue.name, finished_job_seconds=FINISHED_JOB_SECONDS
    )
    await queue.connect()
    message = welcome_email(email="ken@example.com")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retries, job.timeout, job.heartbeat = 1, 1, 0
    try:
        await queue.enqueue(job)
        # A worker took it and died five seconds ago, past the 1 s timeout.
        running = await queue.dequeue()
        assert running is not None
        running.attempts, running.started, running.worker_id = 1, now() - 5000, "dead-worker"
        await running.update(status=Status.ACTIVE)

        swept = await queue.sweep(lock=1)
        done = await queue.job(job.key)
    finally:
        await queue.disconnect()

    letter = await one_letter(dead_letters)
    assert swept == [running.id]
    assert done is not None
    assert done.status == Status.ABORTED
    assert (letter.kind, letter.error_class, letter.attempts) == ("stuck", "Swept", 1)
    assert letter.reason == (
        "swept as stuck on attempt 1 of 1 (running over 1 s): its worker crashed or stalled"
    )


# --- herald-notifier dead-letters ---------------------------------------------------------


async def notifier_cli(redis_url: str, queue_namespace: str, *args: str) -> tuple[int, str, str]:
    """Run ``python -m herald_notifier *args`` on this test's queue."""
    env = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_notifier",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_an_operator_lists_and_replays_a_dead_letter_and_a_sent_one_stays_sent(
    redis_url: str,
    queue_namespace: str,
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
) -> None:
    # Refused for good once (say, a mailbox not created yet), accepted afterwards.
    relay = ScriptedRelay(["550 5.1.1 no such user"])
    message = welcome_email(email="grace@example.com")
    message_id = str(message.message_id)

    async def cli(*args: str) -> tuple[int, str, str]:
        return await notifier_cli(redis_url, queue_namespace, *args)

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            await wait_for_job(notifier_queue, job.key, finished)

            listed = await cli("dead-letters", "list")
            as_json = await cli("dead-letters", "list", "--json")
            letter = await one_letter(dead_letters)
            replayed = await cli("dead-letters", "replay", message_id)
            delivered = await wait_for_job(notifier_queue, job.key, complete)
            left = await dead_letters.entries()

            # The same letter again (its message is sent by now): replay sends nothing.
            await dead_letters.add(letter)
            again = await cli("dead-letters", "replay", "--all")
            suppressed = await wait_for_job(
                notifier_queue, job.key, lambda j: complete(j) and j.result != "sent"
            )
            finally_left = await dead_letters.entries()

    code, out, _ = listed
    [line] = out.splitlines()
    assert code == 0
    assert line.split()[1:4] == [message_id, TASK, "attempts=1"]
    assert line.endswith("SMTP 550: 5.1.1 no such user")
    code, out, _ = as_json
    [entry] = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert entry["message_id"] == message_id
    assert (entry["task"], entry["attempts"], entry["kind"]) == (TASK, 1, "rejected")
    assert entry["payload"] == message.encode()
    assert entry["failed_at"] == line.split()[0]
    assert "550" in entry["reason"]

    code, out, _ = replayed
    assert code == 0
    assert out.startswith(f"replayed  {message_id}  re-enqueued as job {message_id}")
    assert (delivered.result, delivered.attempts) == ("sent", 1)
    assert left == []

    assert again[0] == 0
    assert suppressed.result == "duplicate_suppressed"
    assert finally_left == []
    assert [str(m["To"]) for m in relay.received] == ["Ada <grace@example.com>"]


async def test_replay_keeps_a_payload_that_is_still_malformed_and_says_why(
    redis_url: str,
    queue_namespace: str,
    settings_for: SettingsFor,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
) -> None:
    message_id = str(uuid.uuid4())
    payload = welcome_email(message_id=message_id).encode() | {"email": "not-an-address"}
    async with running_worker(build_settings(settings_for(smtp_port=free_port()))):
        bad = Job(function=TASK, kwargs={"payload": payload}, retries=5)
        await notifier_queue.enqueue(bad)
        await wait_for_job(notifier_queue, bad.key, finished)

    code, out, _ = await notifier_cli(
        redis_url, queue_namespace, "dead-letters", "replay", message_id, "no-such-id"
    )

    assert code == 1
    kept, missing = out.splitlines()
    assert kept.startswith(f"not replayed  {message_id}  kept: still malformed: ")
    assert "email:" in kept
    assert missing == "not replayed  no-such-id  no such dead letter"
    assert [letter.message_id for letter in await dead_letters.entries()] == [message_id]


async def test_replay_wants_ids_or_all(redis_url: str, queue_namespace: str) -> None:
    code, _, err = await notifier_cli(redis_url, queue_namespace, "dead-letters", "replay")

    assert code == 2
    assert "give MESSAGE_IDs or --all" in err

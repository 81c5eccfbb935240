"""What Redis keeps of an email once a real worker, configured as in production, is done
with it: its delivery record alone (``sent:`` or ``skipped:``), nothing of the address or
the name, and what the outbox reconciliation needs to settle its row; a dead letter keeps
its message on purpose. docs/notifier.md, "Retention"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import redis.asyncio as aioredis
from saq import Queue, Status

from herald_notifier.dead_letters import DeadLetters
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.ledger import Standing, delivery_record_key, job_key, read_standings
from herald_shared.messages import AccountEmail
from herald_shared.tasks import enqueue
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.messages import verification_link, welcome_email
from herald_testing.smtp import ScriptedRelay, serve_smtp
from herald_testing.waiting import eventually

SettingsFor = Callable[..., Settings]

ADDRESS = "grace@example.com"
NAME = "Grace Hopper"


def production(settings_for: SettingsFor, port: int) -> Settings:
    """The tests' settings, but finished jobs deleted as a production notifier does."""
    return settings_for(smtp_port=port, notifier_finished_job_seconds=0)


async def left_of(redis: aioredis.Redis, queue: Queue, message: AccountEmail) -> dict[str, bytes]:
    """Every key of the queue's namespace named after ``message`` or holding its address
    or name, with its value (a hash's values joined)."""
    found: dict[str, bytes] = {}
    async for raw in redis.scan_iter(match=f"*{queue.name}*", count=1000):
        key = raw.decode()
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value = await redis.get(key) or b""
        elif kind == "hash":
            value = b" ".join(await redis.hvals(key))  # type: ignore[misc]
        else:
            value = b""
        if str(message.message_id) in key or ADDRESS.encode() in value or NAME.encode() in value:
            found[key] = value
    return found


async def job_gone(redis: aioredis.Redis, queue: Queue, message: AccountEmail) -> bool:
    return not await redis.exists(job_key(queue.name, message.message_id))


async def standing(redis: aioredis.Redis, queue: Queue, message: AccountEmail) -> Standing:
    standings = await read_standings(redis, queue_name=queue.name, message_ids=[message.message_id])
    return standings[str(message.message_id)]


async def test_a_sent_email_leaves_its_sent_record_only(
    settings_for: SettingsFor, notifier_queue: Queue, notifier_redis: aioredis.Redis
) -> None:
    message = welcome_email(email=ADDRESS, display_name=NAME)
    relay = ScriptedRelay()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(production(settings_for, port))):
            assert await enqueue(notifier_queue, message) is not None
            await eventually(lambda: job_gone(notifier_redis, notifier_queue, message))

    assert len(relay.received) == 1
    record = delivery_record_key(notifier_queue.name, message.message_id)
    assert await left_of(notifier_redis, notifier_queue, message) == {record: b"sent:"}
    assert await standing(notifier_redis, notifier_queue, message) is Standing.SENT


async def test_an_expired_link_leaves_a_skipped_record_that_settles_its_row(
    settings_for: SettingsFor, notifier_queue: Queue, notifier_redis: aioredis.Redis
) -> None:
    message = welcome_email(
        email=ADDRESS, display_name=NAME, verification=verification_link(valid_for=-timedelta(1))
    )
    relay = ScriptedRelay()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(production(settings_for, port))):
            assert await enqueue(notifier_queue, message) is not None
            await eventually(lambda: job_gone(notifier_redis, notifier_queue, message))

    assert relay.received == []
    record = delivery_record_key(notifier_queue.name, message.message_id)
    assert await left_of(notifier_redis, notifier_queue, message) == {record: b"skipped:"}
    # Not MISSING: the outbox settles the row rather than pushing it again forever.
    assert await standing(notifier_redis, notifier_queue, message) is Standing.COMPLETED


async def test_a_dead_letter_keeps_the_message_and_its_job_goes(
    settings_for: SettingsFor,
    notifier_queue: Queue,
    notifier_redis: aioredis.Redis,
    dead_letters: DeadLetters,
) -> None:
    message = welcome_email(email=ADDRESS, display_name=NAME)
    relay = ScriptedRelay(["550 5.1.1 no such user"])

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(production(settings_for, port))):
            assert await enqueue(notifier_queue, message) is not None
            await eventually(lambda: job_gone(notifier_redis, notifier_queue, message))

    [letter] = await dead_letters.entries()
    assert letter.payload["email"] == ADDRESS  # kept for an operator's replay
    assert set(await left_of(notifier_redis, notifier_queue, message)) == {dead_letters.letters_key}
    assert await standing(notifier_redis, notifier_queue, message) is Standing.DEAD


async def test_a_finished_job_kept_for_operators_holds_its_outcome_not_its_message(
    settings_for: SettingsFor, notifier_queue: Queue, notifier_redis: aioredis.Redis
) -> None:
    message = welcome_email(email=ADDRESS, display_name=NAME)
    relay = ScriptedRelay()

    with serve_smtp(relay) as port:
        settings = settings_for(smtp_port=port, notifier_finished_job_seconds=120)
        async with running_worker(build_settings(settings)):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            done = await wait_for_job(
                notifier_queue, job.key, lambda j: j.status == Status.COMPLETE
            )

    assert (done.result, done.attempts, done.kwargs) == ("sent", 1, None)
    assert 0 < await notifier_redis.ttl(job.id) <= 120
    left = await left_of(notifier_redis, notifier_queue, message)
    assert not [value for value in left.values() if ADDRESS.encode() in value]


async def test_a_message_recorded_skipped_is_never_sent(
    settings_for: SettingsFor, notifier_queue: Queue, deliveries: DeliveryRecords
) -> None:
    """What a deleted account's job meets (the API records its messages ``skipped``)."""
    message = welcome_email(email=ADDRESS, display_name=NAME)
    assert await deliveries.mark_skipped(message.message_id)
    relay = ScriptedRelay()

    with serve_smtp(relay) as port:
        async with running_worker(build_settings(settings_for(smtp_port=port))):
            job = await enqueue(notifier_queue, message)
            assert job is not None
            done = await wait_for_job(notifier_queue, job.key, finished)

    assert (done.status, done.result, done.attempts) == (Status.COMPLETE, "skipped", 1)
    assert relay.received == []
    assert await deliveries.record(message.message_id) == "skipped:"

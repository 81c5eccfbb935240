"""Reading where messages stand, on a real Redis with real SAQ jobs in every state."""

from __future__ import annotations

import uuid

import pytest
from saq import Job, Queue, Status
from saq.queue.redis import RedisQueue

from herald_shared.ledger import (
    Standing,
    dead_letters_key,
    delivery_record_key,
    job_key,
    read_standings,
    saq_key,
)
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import enqueue
from herald_testing.messages import welcome_email


def welcome() -> WelcomeEmail:
    return welcome_email(user_id=uuid.uuid4(), email="ada@example.com", display_name="Ada")


def redis_queue(queue: Queue) -> RedisQueue:
    assert isinstance(queue, RedisQueue)
    return queue


async def queued(queue: Queue) -> WelcomeEmail:
    message = welcome()
    assert await enqueue(queue, message) is not None
    return message


async def running(queue: Queue) -> tuple[WelcomeEmail, Job]:
    """A message whose job a worker took (in ``active``, status ``active``)."""
    message = await queued(queue)
    job = await queue.dequeue()
    assert job is not None
    assert job.key == str(message.message_id)
    await job.update(status=Status.ACTIVE)
    return message, job


async def record(queue: Queue, message: WelcomeEmail, value: str) -> None:
    await redis_queue(queue).redis.set(delivery_record_key(queue.name, message.message_id), value)


async def dead_letter(queue: Queue, message: WelcomeEmail) -> None:
    letters = dead_letters_key(queue.name)
    await redis_queue(queue).redis.hset(letters, str(message.message_id), "{}")  # type: ignore[misc]


async def standing(queue: Queue, message: WelcomeEmail) -> Standing:
    standings = await read_standings(
        redis_queue(queue).redis, queue_name=queue.name, message_ids=[message.message_id]
    )
    return standings[str(message.message_id)]


def test_the_keys_are_saqs_own(notifier_queue: Queue) -> None:
    message_id = uuid.uuid4()

    assert job_key(notifier_queue.name, message_id) == notifier_queue.job_id(str(message_id))
    for structure in ("queued", "active", "incomplete"):
        assert saq_key(notifier_queue.name, structure) == redis_queue(notifier_queue).namespace(
            structure
        )


async def test_a_queued_job_is_live(notifier_queue: Queue) -> None:
    assert await standing(notifier_queue, await queued(notifier_queue)) is Standing.LIVE


async def test_a_running_job_is_live_even_with_a_claim(notifier_queue: Queue) -> None:
    message, _ = await running(notifier_queue)
    await record(notifier_queue, message, "claimed:w/k/1:99999999999999")

    assert await standing(notifier_queue, message) is Standing.LIVE


async def test_a_job_waiting_out_a_retry_delay_is_live(notifier_queue: Queue) -> None:
    message, job = await running(notifier_queue)
    job.retry_delay = 3600
    await notifier_queue.retry(job, error="451 try later")

    assert await notifier_queue.count("queued") == 0
    assert await standing(notifier_queue, message) is Standing.LIVE


async def test_a_sent_message_is_sent_whatever_its_job(notifier_queue: Queue) -> None:
    message, job = await running(notifier_queue)
    await record(notifier_queue, message, "sent:")

    assert await standing(notifier_queue, message) is Standing.SENT
    await notifier_queue.finish(job, Status.COMPLETE, result="sent")
    assert await standing(notifier_queue, message) is Standing.SENT
    await redis_queue(notifier_queue).redis.delete(job.id)
    assert await standing(notifier_queue, message) is Standing.SENT


async def test_a_job_completed_without_a_send_is_completed_once_gone(
    notifier_queue: Queue,
) -> None:
    """The notifier records ``skipped`` and deletes the job as it completes."""
    message, job = await running(notifier_queue)
    await record(notifier_queue, message, "skipped:")

    assert await standing(notifier_queue, message) is Standing.LIVE
    await notifier_queue.finish(job, Status.COMPLETE, result="link_expired")
    await redis_queue(notifier_queue).redis.delete(job.id)
    assert await standing(notifier_queue, message) is Standing.COMPLETED


async def test_a_job_an_older_notifier_kept_complete_is_completed(notifier_queue: Queue) -> None:
    message, job = await running(notifier_queue)
    await notifier_queue.finish(job, Status.COMPLETE, result="link_expired")

    assert await standing(notifier_queue, message) is Standing.COMPLETED


async def test_a_failed_job_with_its_dead_letter_is_dead(notifier_queue: Queue) -> None:
    message, job = await running(notifier_queue)
    await dead_letter(notifier_queue, message)
    await notifier_queue.finish(job, Status.FAILED, error="550 no such user")

    assert await standing(notifier_queue, message) is Standing.DEAD


async def test_a_replayed_dead_letter_is_live_until_its_job_ends(notifier_queue: Queue) -> None:
    message = await queued(notifier_queue)
    await dead_letter(notifier_queue, message)

    assert await standing(notifier_queue, message) is Standing.LIVE


@pytest.mark.parametrize("status", [Status.FAILED, Status.ABORTED])
async def test_a_job_that_ended_unsuccessfully_without_a_letter_is_stranded(
    notifier_queue: Queue, status: Status
) -> None:
    message, job = await running(notifier_queue)
    await notifier_queue.finish(job, status, error="swept")

    assert await standing(notifier_queue, message) is Standing.STRANDED


async def test_a_job_a_sweep_left_half_aborted_is_stranded(notifier_queue: Queue) -> None:
    """SAQ's abort takes an active job off every list before the sweeper retries it:
    a sweeper that dies in between leaves it ``aborting`` in no list, forever."""
    message, job = await running(notifier_queue)
    await notifier_queue.abort(job, error="swept")

    stored = await notifier_queue.job(str(message.message_id))
    assert stored is not None
    assert stored.status is Status.ABORTING
    assert await standing(notifier_queue, message) is Standing.STRANDED


async def test_a_job_redis_lost_is_missing_even_with_a_claim(notifier_queue: Queue) -> None:
    message = welcome()
    assert await standing(notifier_queue, message) is Standing.MISSING
    await record(notifier_queue, message, "unconfirmed:")
    assert await standing(notifier_queue, message) is Standing.MISSING
    await record(notifier_queue, message, "claimed:w/k/1:1")
    assert await standing(notifier_queue, message) is Standing.MISSING


async def test_an_unreadable_job_is_stranded(notifier_queue: Queue) -> None:
    message = welcome()
    await redis_queue(notifier_queue).redis.set(
        job_key(notifier_queue.name, message.message_id), b"\x00not json"
    )

    assert await standing(notifier_queue, message) is Standing.STRANDED


async def test_a_batch_is_read_at_once_each_in_its_own_standing(notifier_queue: Queue) -> None:
    done, job = await running(notifier_queue)
    live = await queued(notifier_queue)
    missing = welcome()
    await record(notifier_queue, done, "sent:")
    await notifier_queue.finish(job, Status.COMPLETE, result="sent")

    standings = await read_standings(
        redis_queue(notifier_queue).redis,
        queue_name=notifier_queue.name,
        message_ids=[live.message_id, missing.message_id, done.message_id],
    )

    assert standings == {
        str(live.message_id): Standing.LIVE,
        str(missing.message_id): Standing.MISSING,
        str(done.message_id): Standing.SENT,
    }
    assert (
        await read_standings(
            redis_queue(notifier_queue).redis, queue_name=notifier_queue.name, message_ids=[]
        )
        == {}
    )


def test_only_sent_dead_and_completed_settle_and_only_missing_and_stranded_push() -> None:
    assert {s for s in Standing if s.settled} == {
        Standing.SENT,
        Standing.DEAD,
        Standing.COMPLETED,
    }
    assert {s for s in Standing if s.needs_push} == {Standing.MISSING, Standing.STRANDED}

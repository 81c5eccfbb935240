"""The notifier's queue where it departs from SAQ's: the sweep, and shutdown retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from saq import Job, Queue, Status
from saq.utils import now

from herald_notifier.queue import NotifierQueue
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.messages import welcome_email


@pytest.fixture
async def queue(redis_url: str, notifier_queue: Queue) -> AsyncIterator[NotifierQueue]:
    """The notifier's queue on this test's namespace, as a sweeping worker has it."""
    queue = NotifierQueue.connect_url(redis_url, name=notifier_queue.name, sweep_abort_wait=2.0)
    await queue.connect()
    yield queue
    await queue.disconnect()


async def sweep(queue: NotifierQueue) -> list[str]:
    """One sweep now, as if the last one's lock had just run out."""
    await queue.redis.delete(f"saq:{queue.name}:sweep")
    return await queue.sweep(lock=1)


def welcome_job() -> Job:
    message = welcome_email(email="ada@example.com", display_name="Ada")
    return SEND_WELCOME_EMAIL.job(message)


async def taken_by_a_dead_worker(queue: NotifierQueue) -> Job:
    """A job whose worker took it and died 5 s ago, past its 1 s timeout."""
    job = welcome_job()
    job.timeout = 1
    await queue.enqueue(job)
    running = await queue.dequeue()
    assert running is not None
    running.attempts, running.started, running.worker_id = 1, now() - 5000, "dead-worker"
    await running.update(status=Status.ACTIVE)
    return running


async def test_a_job_just_dequeued_is_not_swept_before_its_worker_marks_it_active(
    queue: NotifierQueue,
) -> None:
    await queue.enqueue(welcome_job())
    # A worker's BLMOVE: in the active list, still `queued` until the worker marks it.
    dequeued = await queue.dequeue()
    assert dequeued is not None

    assert await sweep(queue) == []
    stored = await queue.job(dequeued.key)
    assert stored is not None
    assert stored.status == Status.QUEUED

    # Its worker died right there: still not active a sweep later, so it is swept.
    assert await sweep(queue) == [dequeued.id]
    requeued = await queue.job(dequeued.key)
    assert requeued is not None
    assert (requeued.status, requeued.error) == (Status.QUEUED, "swept")
    # Off the active list, back on the queue after its retry delay.
    assert (await queue.count("active"), await queue.count("incomplete")) == (0, 1)


async def test_a_job_marked_active_meanwhile_is_never_swept(queue: NotifierQueue) -> None:
    await queue.enqueue(welcome_job())
    dequeued = await queue.dequeue()
    assert dequeued is not None

    assert await sweep(queue) == []
    dequeued.attempts, dequeued.started = 1, now()
    await dequeued.update(status=Status.ACTIVE)

    assert await sweep(queue) == []
    stored = await queue.job(dequeued.key)
    assert stored is not None
    assert stored.status == Status.ACTIVE


async def test_a_stuck_job_that_completes_while_being_swept_is_not_run_again(
    queue: NotifierQueue,
) -> None:
    running = await taken_by_a_dead_worker(queue)
    sweeping = asyncio.create_task(sweep(queue))
    async with asyncio.timeout(5):
        while True:
            stored = await queue.job(running.key)
            if stored is not None and stored.status == Status.ABORTING:
                break
            await asyncio.sleep(0.01)

    # Its worker was alive after all, and finishes while the sweeper waits.
    await queue.finish(running, Status.COMPLETE, result="sent")
    assert await sweeping == [running.id]

    done = await queue.job(running.key)
    assert done is not None
    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert await queue.count("queued") == 0


async def test_every_stuck_job_of_a_dead_worker_is_requeued_by_one_sweep(
    queue: NotifierQueue,
) -> None:
    jobs = [await taken_by_a_dead_worker(queue) for _ in range(5)]

    swept = await sweep(queue)

    assert sorted(swept) == sorted(job.id for job in jobs)
    for job in jobs:
        stored = await queue.job(job.key)
        assert stored is not None
        assert (stored.status, stored.attempts, stored.error) == (Status.QUEUED, 1, "swept")


async def test_the_sweep_lock_lets_one_worker_sweep_per_interval(queue: NotifierQueue) -> None:
    running = await taken_by_a_dead_worker(queue)
    await queue.redis.set(f"saq:{queue.name}:sweep", 1, ex=60)  # another worker just swept

    assert await queue.sweep(lock=60) == []
    stored = await queue.job(running.key)
    assert stored is not None
    assert stored.status == Status.ACTIVE


async def test_a_shutdown_requeues_without_spending_an_attempt(queue: NotifierQueue) -> None:
    job = welcome_job()
    await queue.enqueue(job)
    running = await queue.dequeue()
    assert running is not None
    running.attempts = 3
    await running.update(status=Status.ACTIVE)

    await queue.retry(running, "cancelled")
    after_shutdown = await queue.job(job.key)
    running.attempts = 3
    await queue.retry(running, "SMTPServerDisconnected")
    after_failure = await queue.job(job.key)

    assert after_shutdown is not None
    assert after_failure is not None
    assert (after_shutdown.status, after_shutdown.attempts) == (Status.QUEUED, 2)
    assert (after_failure.status, after_failure.attempts) == (Status.QUEUED, 3)

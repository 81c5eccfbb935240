"""The notifier's queue where it departs from SAQ's: the sweep, late finishes of an
attempt taken for dead, and shutdown retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from saq import Job, Queue, Status
from saq.utils import now

from herald_notifier.queue import NotifierQueue
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.jobs import FINISHED_JOB_SECONDS
from herald_testing.messages import welcome_email


@pytest.fixture
async def queue(redis_url: str, notifier_queue: Queue) -> AsyncIterator[NotifierQueue]:
    """The notifier's queue on this test's namespace, as a sweeping worker has it."""
    queue = NotifierQueue.connect_url(
        redis_url, name=notifier_queue.name, finished_job_seconds=FINISHED_JOB_SECONDS
    )
    await queue.connect()
    yield queue
    await queue.disconnect()


async def sweep(queue: NotifierQueue) -> list[str]:
    """One sweep now, as if the last one's lock had just run out."""
    await queue.redis.delete(f"saq:{queue.name}:sweep")
    return await queue.sweep(lock=1)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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


async def test_a_stuck_job_that_changed_after_the_sweep_read_it_is_left_alone(
    queue: NotifierQueue,
) -> None:
    running = await taken_by_a_dead_worker(queue)
    [(_, read)] = await queue.store.snapshot_active(lock=1) or []
    assert read is not None
    # Its worker was alive after all, and finishes before the sweeper acts.
    await queue.finish(running, Status.COMPLETE, result="sent")

    stuck = queue.deserialize(read)
    assert stuck is not None
    assert not await queue.store.requeue(stuck, expected=read, error="swept")
    done = await queue.job(running.key)
    assert done is not None
    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert (await queue.count("queued"), await queue.count("incomplete")) == (0, 0)


async def test_a_late_finish_of_a_swept_attempt_cannot_undo_the_requeue(
    queue: NotifierQueue,
) -> None:
    stale = await taken_by_a_dead_worker(queue)
    refused = value("herald_notifier_stale_attempt_writes_total", op="finish")
    assert await sweep(queue) == [stale.id]

    # The worker taken for dead wakes up and ends its attempt every way it can.
    await queue.finish(queue.copy(stale), Status.COMPLETE, result="sent")
    await queue.finish(queue.copy(stale), Status.FAILED, error="SMTP 550")
    await queue.retry(queue.copy(stale), "SMTPServerDisconnected")

    requeued = await queue.job(stale.key)
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.error) == (Status.QUEUED, 1, "swept")
    assert await queue.count("incomplete") == 1
    assert await queue.dead_letters.entries() == []
    assert value("herald_notifier_stale_attempt_writes_total", op="finish") == refused + 2


async def test_a_late_finish_cannot_end_the_attempt_that_took_the_job_over(
    queue: NotifierQueue,
) -> None:
    stale = await taken_by_a_dead_worker(queue)
    await sweep(queue)
    await queue.redis.zadd(f"saq:{queue.name}:incomplete", {stale.id: 0})
    await queue.redis.rpush(f"saq:{queue.name}:queued", stale.id)  # type: ignore[misc]  # due now
    taken_over = await queue.dequeue()
    assert taken_over is not None
    taken_over.attempts, taken_over.started, taken_over.worker_id = 2, now(), "live-worker"
    await taken_over.update(status=Status.ACTIVE)

    await queue.finish(queue.copy(stale), Status.COMPLETE, result="sent")
    running = await queue.job(stale.key)
    await queue.finish(taken_over, Status.COMPLETE, result="duplicate_suppressed")
    done = await queue.job(stale.key)

    assert running is not None
    assert (running.status, running.worker_id) == (Status.ACTIVE, "live-worker")
    assert done is not None
    assert (done.status, done.result, done.attempts) == (
        Status.COMPLETE,
        "duplicate_suppressed",
        2,
    )
    assert (await queue.count("active"), await queue.count("incomplete")) == (0, 0)


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
    async def running_on_its_third_attempt() -> Job:
        await queue.enqueue(welcome_job())
        running = await queue.dequeue()
        assert running is not None
        running.attempts, running.worker_id = 3, "this-worker"
        await running.update(status=Status.ACTIVE)
        return running

    shut_down, failed = await running_on_its_third_attempt(), await running_on_its_third_attempt()
    await queue.retry(shut_down, "cancelled")
    await queue.retry(failed, "SMTPServerDisconnected")
    after_shutdown = await queue.job(shut_down.key)
    after_failure = await queue.job(failed.key)

    assert after_shutdown is not None
    assert after_failure is not None
    assert (after_shutdown.status, after_shutdown.attempts) == (Status.QUEUED, 2)
    assert (after_failure.status, after_failure.attempts) == (Status.QUEUED, 3)

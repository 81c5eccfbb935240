"""Pin what ``herald_notifier.saq_redis`` knows of SAQ's Redis internals.

The notifier's one-step scripts write SAQ's keys and job records themselves,
and its cancel cause reads SAQ's worker state. Each test here fails when a SAQ
upgrade changes something they rely on: the version range, the key names, the
job record's fields, what SAQ's own retry, finish, dequeue, schedule and abort
check do with them, and where the worker keeps a running job's abort.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import saq
from saq import Job, Queue, Status, Worker
from saq.queue.redis import RedisQueue
from saq.types import JobTaskContext
from saq.utils import now

from herald_notifier.saq_redis import SUPPORTED_SAQ, Attempt, JobStore


@pytest.fixture
async def saq_queue(redis_url: str, notifier_queue: Queue) -> AsyncIterator[RedisQueue]:
    """A plain SAQ Redis queue on this test's queue name."""
    queue = RedisQueue.from_url(redis_url, name=notifier_queue.name)
    await queue.connect()
    yield queue
    await queue.disconnect()


def saq_version() -> tuple[int, ...]:
    return tuple(int(part) for part in saq.__version__.split(".")[:2])


def test_the_installed_saq_is_a_version_the_scripts_were_written_for() -> None:
    low, high = SUPPORTED_SAQ
    assert low <= saq_version() < high, (
        f"saq {saq.__version__}: check herald_notifier.saq_redis against its RedisQueue, "
        "then widen SUPPORTED_SAQ"
    )


def test_the_keys_are_where_saq_keeps_them(saq_queue: RedisQueue) -> None:
    store = JobStore(saq_queue)
    name = saq_queue.name

    assert (store.active, store.queued, store.incomplete, store.sweep_lock) == (
        saq_queue._active,
        saq_queue._queued,
        saq_queue._incomplete,
        saq_queue._sweep,
    )
    assert store.incomplete == f"saq:{name}:incomplete"
    assert saq_queue.job_id("k") == f"saq:job:{name}:k"
    assert Job(function="f", key="k", queue=saq_queue).abort_id == "saq:abort:k"


def test_a_job_record_is_json_with_the_fields_the_scripts_read(saq_queue: RedisQueue) -> None:
    fields = {field.name: field for field in dataclasses.fields(Job)}
    fresh = json.loads(saq_queue.serialize(Job(function="f", key="k", queue=saq_queue)))
    running = Job(function="f", key="k", queue=saq_queue, attempts=2, worker_id="w")
    running.status = Status.ACTIVE
    stored = json.loads(saq_queue.serialize(running))

    assert {"status", "attempts", "worker_id"} <= set(fields)
    assert (fields["attempts"].default, fields["worker_id"].default) == (0, None)
    # Fields at their default are left out: the scripts read absent as 0 / none.
    assert "attempts" not in fresh
    assert "worker_id" not in fresh
    assert (stored["status"], stored["attempts"], stored["worker_id"]) == ("active", 2, "w")
    assert {status.value for status in Status} >= {"queued", "active", "aborting", "complete"}


async def marked_active(queue: RedisQueue, job: Job) -> Job:
    """``job`` enqueued, dequeued and marked active, as SAQ's worker does."""
    await queue.enqueue(job)
    running = await queue.dequeue()
    assert running is not None
    running.started, running.worker_id = now(), "w"
    running.attempts += 1
    await running.update(status=Status.ACTIVE)
    return running


async def where(queue: RedisQueue, job: Job) -> tuple[bool, bool, float | None]:
    """In the queued list, in the active list, its incomplete score."""
    queued = [raw.decode() for raw in await queue.redis.lrange(queue._queued, 0, -1)]  # type: ignore[misc]
    active = [raw.decode() for raw in await queue.redis.lrange(queue._active, 0, -1)]  # type: ignore[misc]
    return job.id in queued, job.id in active, await queue.redis.zscore(queue._incomplete, job.id)


@pytest.mark.parametrize("retry_delay", [0.0, 30.0])
async def test_a_requeue_puts_a_job_where_saq_s_retry_does(
    saq_queue: RedisQueue, retry_delay: float
) -> None:
    store = JobStore(saq_queue)
    by_saq = await marked_active(saq_queue, Job(function="f", retry_delay=retry_delay))
    by_us = await marked_active(saq_queue, Job(function="f", retry_delay=retry_delay))

    await saq_queue.retry(by_saq, "failed")
    assert await store.requeue(by_us, expected=Attempt.of(by_us), error="failed")

    saq_queued, saq_active, saq_score = await where(saq_queue, by_saq)
    our_queued, our_active, our_score = await where(saq_queue, by_us)
    assert (our_queued, our_active) == (saq_queued, saq_active) == (retry_delay == 0, False)
    assert saq_score is not None
    assert our_score == pytest.approx(saq_score, abs=2)
    saq_record, our_record = await saq_queue.job(by_saq.key), await saq_queue.job(by_us.key)
    assert saq_record is not None
    assert our_record is not None
    ignored = {"key", "touched", "queued"}
    assert {k: v for k, v in our_record.to_dict().items() if k not in ignored} == {
        k: v for k, v in saq_record.to_dict().items() if k not in ignored
    }


async def test_a_finish_ends_a_job_as_saq_s_finish_does(saq_queue: RedisQueue) -> None:
    store = JobStore(saq_queue)
    by_saq = await marked_active(saq_queue, Job(function="f", ttl=300))
    by_us = await marked_active(saq_queue, Job(function="f", ttl=300))

    await saq_queue.finish(by_saq, Status.COMPLETE, result="sent")
    finished = await store.finish(by_us, Status.COMPLETE, expected=Attempt.of(by_us), result="sent")

    assert finished.done
    assert await where(saq_queue, by_us) == await where(saq_queue, by_saq) == (False, False, None)
    assert 0 < await saq_queue.redis.ttl(by_us.id) <= 300
    saq_record, our_record = await saq_queue.job(by_saq.key), await saq_queue.job(by_us.key)
    assert saq_record is not None
    assert our_record is not None
    assert (our_record.status, our_record.result, our_record.progress) == (
        saq_record.status,
        saq_record.result,
        saq_record.progress,
    )


async def test_saq_runs_a_requeued_job_again_when_due(saq_queue: RedisQueue) -> None:
    store = JobStore(saq_queue)
    now_due = await marked_active(saq_queue, Job(function="f"))
    later = await marked_active(saq_queue, Job(function="f", retry_delay=1.0))
    assert await store.requeue(now_due, expected=Attempt.of(now_due), error="swept")
    assert await store.requeue(later, expected=Attempt.of(later), error="swept")

    dequeued = await saq_queue.dequeue()
    assert dequeued is not None
    assert dequeued.key == now_due.key
    assert await saq_queue.dequeue(timeout=0.01) is None  # the other one waits out its delay
    await saq_queue.redis.zadd(saq_queue._incomplete, {later.id: now() / 1000 - 1})
    assert await saq_queue.schedule(lock=1) == [later.id]
    again = await saq_queue.dequeue()
    assert again is not None
    assert again.key == later.key


def test_saq_s_worker_stops_a_job_by_its_stored_status_not_by_the_abort_key() -> None:
    # A re-queue raises no abort key and relies on the Lease to stop a stale
    # attempt: if SAQ's worker starts honouring abort keys (which name the job,
    # not the attempt), revisit herald_notifier.saq_redis.
    source = inspect.getsource(Worker.abort)
    assert "Status.ABORTING" in source
    assert "abort_id" not in source


def test_the_worker_state_the_cancel_cause_reads_is_where_saq_keeps_it(
    saq_queue: RedisQueue,
) -> None:
    # herald_notifier.saq_redis.worker_cancel_cause reads these to tell an
    # abort or a shutdown from a timeout.
    worker: Worker[Any] = Worker(saq_queue, functions=[])

    assert isinstance(worker.job_task_contexts, dict)
    assert isinstance(worker.event, asyncio.Event)
    assert "aborted" in JobTaskContext.__annotations__
    assert 'task_data["aborted"] =' in inspect.getsource(Worker.abort)

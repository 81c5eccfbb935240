"""The notifier's consumer on a real Redis: decoding, failure notes, the job
heartbeat and the lease that stops an attempt which lost its job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from saq import Job, Queue, Status, Worker
from saq.job import TERMINAL_STATUSES
from structlog.testing import capture_logs

from herald_notifier.consumer import LEASE, consumer, hold, lease_of
from herald_notifier.failures import FAILURE, failure_of, note_failure
from herald_notifier.saq_redis import touch
from herald_shared.messages import MessageError, WelcomeEmail
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.messages import welcome_email


def welcome() -> WelcomeEmail:
    return welcome_email(user_id=uuid.uuid4(), email="ada@example.com", display_name="Ada")


async def running(queue: Queue, *, heartbeat: int = 10, worker_id: str = "w1") -> Job:
    """A job as a worker running its first attempt has it (in Redis too)."""
    job = SEND_WELCOME_EMAIL.job(welcome())
    job.heartbeat = heartbeat
    await queue.enqueue(job)
    taken = await queue.dequeue()
    assert taken is not None
    taken.attempts, taken.worker_id = 1, worker_id
    await taken.update(status=Status.ACTIVE)
    return taken


async def test_unexpected_job_arguments_fail_the_job_as_malformed() -> None:
    name, run = consumer(SEND_WELCOME_EMAIL, lambda ctx, message: asyncio.sleep(0))
    job = Job(name, retries=5, attempts=1)

    with pytest.raises(MessageError, match="unexpected job arguments \\['message'\\]"):
        await run({"job": job}, message=welcome().encode())

    assert job.retries == job.attempts
    note = failure_of(job)
    assert note is not None
    assert note["kind"] == "malformed"


def test_a_failure_note_describes_only_its_own_attempt() -> None:
    job = Job("send_welcome_email", attempts=1)
    note_failure(job, kind="transient", reason="451  try\n later", error_class="SMTPDataError")

    assert failure_of(job) == {
        "attempt": 1,
        "kind": "transient",
        "reason": "451 try later",
        "error_class": "SMTPDataError",
    }
    job.attempts = 2
    assert failure_of(job) is None
    assert FAILURE in job.meta


async def test_touch_refreshes_only_the_attempt_that_still_has_the_job(
    notifier_queue: Queue,
) -> None:
    job = await running(notifier_queue)
    before = job.touched
    await asyncio.sleep(0.01)

    assert await touch(job) is True
    stored = await notifier_queue.job(job.key)
    assert stored is not None
    assert stored.touched > before
    assert stored.status == Status.ACTIVE

    # The sweeper aborts it: a beat must not turn `aborting` back into `active`.
    await notifier_queue.abort(stored, "swept")
    assert await touch(job) is None
    aborting = await notifier_queue.job(job.key)
    assert aborting is not None
    assert aborting.status == Status.ABORTING

    # ...and re-queues it: the attempt has lost its job, and must not write it.
    await notifier_queue.retry(aborting, "swept")
    assert await touch(job) is False
    requeued = await notifier_queue.job(job.key)
    assert requeued is not None
    assert (requeued.status, requeued.attempts) == (Status.QUEUED, 1)


async def test_touch_refuses_another_workers_attempt(notifier_queue: Queue) -> None:
    job = await running(notifier_queue)
    stored = await notifier_queue.job(job.key)
    assert stored is not None
    stored.attempts, stored.worker_id = 2, "w2"
    await stored.update(status=Status.ACTIVE)

    assert await touch(job) is False


@contextlib.asynccontextmanager
async def attempt(job: Job, **ctx: Any) -> AsyncIterator[tuple[asyncio.Task[None], Any]]:
    """A stand-in job task holding ``job``'s lease until cancelled."""
    context: dict[str, Any] = {"job": job, **ctx}
    started = asyncio.Event()

    async def body() -> None:
        async with hold(context, job):
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await started.wait()
    try:
        yield task, context
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_lease_keeps_the_job_touched_while_the_attempt_runs(
    notifier_queue: Queue,
) -> None:
    job = await running(notifier_queue, heartbeat=1)
    seen: set[int] = set()

    async with attempt(job) as (task, ctx):
        lease = lease_of(ctx)
        assert lease is not None
        assert lease.seconds == 1
        async with asyncio.timeout(5):
            while len(seen) < 4:
                stored = await notifier_queue.job(job.key)
                assert stored is not None
                seen.add(stored.touched)
                await asyncio.sleep(0.05)
        assert not task.done()

    assert LEASE not in ctx


async def test_an_attempt_whose_renewal_is_refused_is_cancelled(notifier_queue: Queue) -> None:
    job = await running(notifier_queue, heartbeat=1)

    async def refused() -> bool:
        return False

    with capture_logs() as logs:
        async with attempt(job) as (task, ctx):
            lease = lease_of(ctx)
            assert lease is not None
            lease.keep(refused)
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
            assert lease.lost is not None

    assert [entry["event"] for entry in logs] == ["job.lease_lost"]


async def test_an_attempt_that_cannot_beat_lapses_after_its_heartbeat(
    notifier_queue: Queue,
) -> None:
    job = await running(notifier_queue, heartbeat=1)

    async def unreachable() -> bool:
        raise ConnectionError("Redis is gone")

    async with attempt(job) as (task, ctx):
        lease = lease_of(ctx)
        assert lease is not None
        lease.keep(unreachable)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        assert lease.lost == "no heartbeat for 1 s"


async def test_a_timed_out_attempt_is_noted_as_such(unswept_notifier_queue: Queue) -> None:
    notifier_queue = unswept_notifier_queue

    async def slow(ctx: dict[str, Any], message: WelcomeEmail) -> None:
        await asyncio.sleep(30)

    worker: Worker[Any] = Worker(notifier_queue, [consumer(SEND_WELCOME_EMAIL, slow)])
    job = SEND_WELCOME_EMAIL.job(welcome())
    job.timeout, job.retries = 1, 1
    task = asyncio.create_task(worker.start())
    try:
        await notifier_queue.enqueue(job)
        async with asyncio.timeout(10):
            while True:
                done = await notifier_queue.job(job.key)
                if done is not None and done.status in TERMINAL_STATUSES:
                    break
                await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        await task

    assert done.status == Status.FAILED
    assert done.meta[FAILURE] == {
        "attempt": 1,
        "kind": "transient",
        "reason": "timed out after 1 s",
        "error_class": "TimeoutError",
    }

"""Real SAQ workers and jobs in tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from saq import Job, Queue, Worker
from saq.job import TERMINAL_STATUSES

FINISHED_JOB_SECONDS = 600
"""How long the notifier tests' queues keep a finished job readable (without its message),
so that a test can read how each ended; a production notifier deletes it at once."""


@contextlib.asynccontextmanager
async def running_worker(saq_settings: Mapping[str, Any]) -> AsyncIterator[Worker[Any]]:
    """A real SAQ worker built from ``saq_settings``, in this event loop, until the block ends."""
    worker: Worker[Any] = Worker(**saq_settings)
    await worker.queue.connect()
    task = asyncio.create_task(worker.start())
    try:
        yield worker
    finally:
        await worker.stop()
        await task
        await worker.queue.disconnect()


async def wait_for_job(
    queue: Queue, key: str, until: Callable[[Job], bool], *, within: float = 10.0
) -> Job:
    """The job ``key`` once ``until(job)`` holds, polling up to ``within`` seconds."""
    job: Job | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                job = await queue.job(key)
                if job is not None and until(job):
                    return job
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"job {key} not as expected within {within} s: {job!r}") from None


def finished(job: Job) -> bool:
    """The job is over: complete, failed or aborted."""
    return job.status in TERMINAL_STATUSES


async def queued(queue: Queue, function: str) -> list[dict[str, Any]]:
    """The payloads of ``queue``'s queued jobs of ``function``, oldest first."""
    info = await queue.info(jobs=True)
    jobs = sorted(info["jobs"], key=lambda job: job["queued"])
    return [job["kwargs"]["payload"] for job in jobs if job["function"] == function]

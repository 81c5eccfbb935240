"""The notifier's view of its SAQ queue: SAQ's Redis queue plus what the
notifier's "never lost" needs at the points where SAQ decides a job's fate.

- ``finish``: a job failing for good (``failed``, or ``aborted`` by the
  sweeper with no attempt left) is written to the dead-letter store first.
  Done here rather than in the consumer wrapper or an ``after_process`` hook
  because only here are *all* ends seen (SAQ fails a timed-out job after the
  wrapper is gone; a sweep runs in another worker's upkeep, with neither
  wrapper nor hook) and because the letter is written *before* the job's
  terminal state: a crash in between leaves the job to be swept, not lost.
  The reason comes from the consumer's note on ``job.meta``.
- ``retry``: an attempt cancelled by a shutdown (SAQ retries it with error
  ``"cancelled"``, whatever its retries) is re-queued without spending an
  attempt: a deploy must not use up a message's retries.
- ``sweep``: SAQ's sweep (saq 0.26.4 ``RedisQueue.sweep``, mirrored) with
  three changes:

  1. A job in the active list whose stored status is not yet ``active`` is
     swept only if it still is at the next sweep. A worker moves a job to
     the active list (BLMOVE) and marks it active a moment later; SAQ sweeps
     it in between, and since its 1 s schedule poll and the sweep fire in
     the same tick, a retry moved to the queue is often dequeued right then:
     measured, about half of the crash recoveries in the tests had their
     re-run aborted mid-flight and re-queued again.
  2. A job that completed or failed on its own while the sweeper waited for
     the abort is left alone. SAQ re-queues it if it has attempts left, so a
     finished job runs again (the delivery record stops a second email, at
     the cost of an attempt).
  3. The stuck jobs are aborted concurrently, each waiting
     ``sweep_abort_wait`` s (SAQ: 5 s, one job after the other) for its
     worker to confirm. A live worker confirms within SAQ's 1 s abort check;
     a dead one never does, so SAQ's order made a crashed worker's N jobs
     wait N x 5 s; here they all wait once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import structlog
from saq import Job, Status
from saq.queue.base import logger
from saq.queue.redis import RedisQueue

from herald_notifier.dead_letters import DeadLetters, letter_for
from herald_notifier.metrics import DEAD_LETTERS
from herald_shared.metrics import OTHER_FUNCTION
from herald_shared.tasks import TASKS

if TYPE_CHECKING:
    from redis.asyncio import Redis

_SWEEP_SNAPSHOT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
redis.call('SETEX', KEYS[1], ARGV[1], 1)
local id_jobs = {}
for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    id_jobs[i] = {v, redis.call('GET', v)}
end
return id_jobs
"""
"""saq 0.26.4's sweep script, but telling "another worker holds the sweep lock"
(nil) from "nothing active" (empty): each id of the active list with its job."""

_RUNNING = (Status.ACTIVE, Status.ABORTING)

SHUTDOWN_ERROR = "cancelled"
"""The error SAQ retries an attempt with when a shutdown cancelled it."""

log = structlog.get_logger(__name__)


class NotifierQueue(RedisQueue):
    """SAQ's Redis queue, dead-lettering what fails for good (see module docs)."""

    def __init__(self, redis: Redis, *, name: str, sweep_abort_wait: float = 1.0) -> None:
        super().__init__(redis, name=name)
        self.sweep_abort_wait = sweep_abort_wait
        self._suspects: set[str] = set()
        self._snapshot = redis.register_script(_SWEEP_SNAPSHOT)
        self.dead_letters = DeadLetters(redis, queue_name=name)

    @classmethod
    def connect_url(cls, url: str, *, name: str, sweep_abort_wait: float = 1.0) -> NotifierQueue:
        """A queue on the Redis at ``url`` (not yet connected)."""
        from redis import asyncio as aioredis  # noqa: PLC0415  (as SAQ's from_url)

        return cls(aioredis.from_url(url), name=name, sweep_abort_wait=sweep_abort_wait)

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Abort and retry (or finish) the stuck jobs of the active list, if no
        other worker swept within ``lock`` s (see the module docs)."""
        id_jobs = await self._snapshot(keys=[self._sweep, self._active], args=[lock])
        if id_jobs is None:
            return []  # another worker swept within `lock` s
        wait = min(abort, self.sweep_abort_wait)
        swept: list[str] = []
        stuck: list[Job] = []
        suspects: set[str] = set()
        for raw_id, job_bytes in id_jobs:
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                logger.info("Sweeping missing job %s", job_id)
            elif job.status == Status.ACTIVE and not job.stuck:
                continue
            elif job.status not in _RUNNING and job_id not in self._suspects:
                suspects.add(job_id)  # dequeued a moment ago: look again next sweep
            else:
                swept.append(job_id)
                stuck.append(job)
        self._suspects = suspects
        await asyncio.gather(*(self._sweep_stuck(job, wait) for job in stuck))
        return swept

    async def _sweep_stuck(self, job: Job, wait: float) -> None:
        logger.info("Sweeping job %s", job.info(logger.isEnabledFor(logging.DEBUG)))
        await self.abort(job, error=self.swept_error_message)
        try:
            await job.refresh(wait)
        except TimeoutError:
            logger.info("Could not abort job %s", job.id)
        except RuntimeError:
            return  # gone meanwhile (its ttl ran out)
        if job.status in (Status.COMPLETE, Status.FAILED):
            log.info("job.sweep_skipped", job_key=job.key, status=job.status.value)
            return
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)

    async def retry(self, job: Job, error: str | None) -> None:
        if error == SHUTDOWN_ERROR and job.attempts > 0:
            job.attempts -= 1
            log.info("job.requeued_after_shutdown", job_key=job.key, attempts=job.attempts)
        await super().retry(job, error)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        swept = status == Status.ABORTED and error == self.swept_error_message
        if status == Status.FAILED or (swept and not job.retryable):
            letter = letter_for(job, error, swept=swept)
            if await self.dead_letters.add(letter):
                task = letter.task if letter.task in TASKS else OTHER_FUNCTION
                DEAD_LETTERS.labels(task, letter.kind).inc()
            log.error(
                "job.dead_lettered",
                job_key=job.key,
                message_id=letter.message_id,
                task=letter.task,
                kind=letter.kind,
                reason=letter.reason,
                attempts=letter.attempts,
            )
        await super().finish(job, status, result=result, error=error, **kwargs)

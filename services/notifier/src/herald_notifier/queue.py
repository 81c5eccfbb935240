"""The notifier's SAQ queue: SAQ's Redis queue with every change of a job's
state made in one step (``herald_notifier.saq_redis.JobStore``), and the
notifier's "never lost" at the points where SAQ decides a job's fate:

- ``finish``: a job failing for good is failed and dead-lettered in one step;
  a finished job is deleted (or kept ``finished_job_seconds`` without its
  message): what stays of a message is its delivery record (docs/notifier.md,
  "Retention");
- ``finish`` and ``retry`` change the job only while it is still the ending
  attempt's (a late write is refused and counted);
- ``retry``: a shutdown's cancellation does not spend an attempt;
- ``dequeue``: a stopping worker takes no new job; one its idle slot received
  after SIGTERM goes back to the head of the queue, untouched, for another
  worker (SAQ's idle slots keep dequeuing through the shutdown grace, and a
  job taken then is cancelled mid-send at its end: a duplicate);
- ``sweep``: SAQ's sweep (saq 0.26.4 ``RedisQueue.sweep``), in one step per
  stuck job, without waiting on the dead worker, and sparing a job dequeued a
  moment ago.

Why, and which upstream issue each change works around: docs/notifier.md
("The SAQ layer").
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog
from saq import Job, Status
from saq.queue.base import logger
from saq.queue.redis import RedisQueue

from herald_notifier.dead_letters import DeadLetter, DeadLetters, letter_for
from herald_notifier.faults import NO_FAULTS, Faults
from herald_notifier.metrics import DEAD_LETTERS, JOBS_SWEPT, STALE_ATTEMPT_WRITES
from herald_notifier.saq_redis import Attempt, Expected, JobStore, LetterWrite
from herald_shared.metrics import OTHER_FUNCTION
from herald_shared.redis_client import RedisTarget, redis_client
from herald_shared.tasks import TASKS

if TYPE_CHECKING:
    from redis.asyncio import Redis

_RUNNING = (Status.ACTIVE, Status.ABORTING)

SHUTDOWN_ERROR = "cancelled"
"""The error SAQ retries an attempt with when a shutdown cancelled it."""

log = structlog.get_logger(__name__)


class NotifierQueue(RedisQueue):
    """SAQ's Redis queue, changing jobs in one step and dead-lettering what
    fails for good (see module docs)."""

    def __init__(
        self,
        redis: Redis,
        *,
        name: str,
        faults: Faults = NO_FAULTS,
        finished_job_seconds: int = 0,
    ) -> None:
        """``finished_job_seconds``: how long a finished job stays readable (its
        status, result, attempts; never its message); 0 deletes it as it finishes."""
        super().__init__(redis, name=name)
        self.faults = faults
        self.finished_job_seconds = finished_job_seconds
        self.store = JobStore(self)
        self.dead_letters = DeadLetters(redis, queue_name=name)
        self._suspects: set[str] = set()
        self._stopping: asyncio.Event | None = None

    @classmethod
    def connect_url(
        cls,
        redis: RedisTarget | str,
        *,
        name: str,
        faults: Faults = NO_FAULTS,
        finished_job_seconds: int = 0,
    ) -> NotifierQueue:
        """A queue on ``redis`` (a target with or without Sentinels, or a URL); not yet
        connected."""
        return cls(
            redis_client(redis),
            name=name,
            faults=faults,
            finished_job_seconds=finished_job_seconds,
        )

    async def dequeue(
        self,
        timeout: float = 0.0,  # noqa: ASYNC109  (SAQ's signature)
        poll_interval: float = 0.0,
    ) -> Job | None:
        """SAQ's dequeue (BLMOVE to the active list); the worker marks the job
        active after it returns. None, with the job given back, once the worker
        is stopping (``stop_taking_jobs_on``)."""
        if self._stopped_taking():
            return None
        job = await super().dequeue(timeout, poll_interval)
        if job is None:
            return None
        if self._stopped_taking():
            await self._give_back(job)
            return None
        self.faults.reach("after_dequeue", job_key=job.key)
        return job

    def stop_taking_jobs_on(self, stopping: asyncio.Event) -> None:
        """Take no job once ``stopping`` is set: the worker's stop event, which
        SAQ sets on SIGTERM before it waits out the shutdown grace."""
        self._stopping = stopping

    def _stopped_taking(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    async def _give_back(self, job: Job) -> None:
        """Move a job just dequeued, not yet started, from the active list back
        to the head of the queued list, in one step: as if never dequeued."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self._active, 1, job.id)
            pipe.lpush(self._queued, job.id)
            await pipe.execute()
        log.info("job.given_back", message_id=job.key, reason="worker stopping")

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """Re-queue (or dead-letter) the stuck jobs of the active list, if no
        other worker swept within ``lock`` s (see the module docs)."""
        id_jobs = await self.store.snapshot_active(lock=lock)
        if id_jobs is None:
            return []  # another worker swept within `lock` s
        swept: list[str] = []
        stuck: list[tuple[Job, bytes]] = []
        suspects: set[str] = set()
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None or job_bytes is None:
                swept.append(job_id)
                await self.store.drop_missing(job_id)
                logger.info("Sweeping missing job %s", job_id)
            elif job.status == Status.ACTIVE and not job.stuck:
                continue
            elif job.status not in _RUNNING and job_id not in self._suspects:
                # Moved to the active list (BLMOVE) but not yet marked active: SAQ
                # sweeps it (tobymao/saq#124, #277). Look again next sweep.
                suspects.add(job_id)
            else:
                swept.append(job_id)
                stuck.append((job, job_bytes))
        self._suspects = suspects
        await asyncio.gather(*(self._sweep_stuck(job, snapshot) for job, snapshot in stuck))
        return swept

    async def _sweep_stuck(self, job: Job, snapshot: bytes) -> None:
        # One step, no abort-then-wait-then-retry (tobymao/saq#277; JobStore).
        logger.info("Sweeping job %s", job.info(logger.isEnabledFor(logging.DEBUG)))
        self.faults.reach("sweep_before_requeue", job_key=job.key)
        error = self.swept_error_message
        outcome = "requeued" if job.retryable else "dead_lettered"
        if job.retryable:
            done = await self._requeue(job, expected=snapshot, error=error)
            if done:
                self.faults.reach("sweep_after_requeue", job_key=job.key)
        else:
            done = await self._end(job, Status.ABORTED, expected=snapshot, error=error)
        if done:
            JOBS_SWEPT.labels(outcome).inc()
        else:
            log.info("job.sweep_skipped", job_key=job.key, reason="changed since the sweep read it")

    async def retry(self, job: Job, error: str | None) -> None:
        """Re-queue ``job`` after its attempt failed or was cancelled (one step;
        refused if the job has moved on, see the module docs)."""
        attempt = Attempt.of(job)
        self.faults.reach("before_retry", job_key=job.key)
        if error == SHUTDOWN_ERROR and job.attempts > 0:
            job.attempts -= 1
            log.info("job.requeued_after_shutdown", job_key=job.key, attempts=job.attempts)
        if not await self._requeue(job, expected=attempt, error=error):
            _refused("retry", job, attempt)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        """End ``job``'s attempt with ``status``, dead-lettering it if it failed
        for good (one step; refused if the job has moved on)."""
        attempt = Attempt.of(job)
        if not await self._end(job, status, expected=attempt, result=result, error=error):
            _refused("finish", job, attempt)

    async def _requeue(self, job: Job, *, expected: Expected, error: str | None) -> bool:
        if not await self.store.requeue(job, expected=expected, error=error):
            return False
        self.retried += 1
        logger.info("Retrying %s", job.info(logger.isEnabledFor(logging.DEBUG)))
        return True

    async def _end(
        self,
        job: Job,
        status: Status,
        *,
        expected: Expected,
        result: Any = None,
        error: str | None = None,
    ) -> bool:
        swept = status == Status.ABORTED and error == self.swept_error_message
        letter = None
        if status == Status.FAILED or (swept and not job.retryable):
            letter = letter_for(job, error, swept=swept)
            self.faults.reach("before_dead_letter", job_key=job.key)
        outcome = await self.store.finish(
            job,
            status,
            expected=expected,
            result=result,
            error=error,
            letter=self._letter_write(letter) if letter is not None else None,
            # Not the job's own ttl (the producer's): deleted unless kept a while.
            keep_seconds=self.finished_job_seconds or -1,
        )
        if not outcome.done:
            return False
        logger.info("Finished %s", job.info(logger.isEnabledFor(logging.DEBUG)))
        if status == Status.COMPLETE:
            self.complete += 1
        elif status == Status.FAILED:
            self.failed += 1
        elif status == Status.ABORTED:
            self.aborted += 1
        if letter is not None:
            if outcome.letter_added:
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
            self.faults.reach("after_dead_letter", job_key=job.key)
        return True

    def _letter_write(self, letter: DeadLetter) -> LetterWrite:
        return LetterWrite(
            letters_key=self.dead_letters.letters_key,
            index_key=self.dead_letters.index_key,
            message_id=letter.message_id,
            letter_json=letter.to_json(),
            failed_at=datetime.fromisoformat(letter.failed_at).timestamp(),
        )


def _refused(op: str, job: Job, attempt: Attempt) -> None:
    """Count and log a finish or retry of an attempt whose job had moved on."""
    STALE_ATTEMPT_WRITES.labels(op).inc()
    log.warning(
        "job.stale_attempt_write_refused",
        op=op,
        job_key=job.key,
        attempt=attempt.attempts,
        worker_id=attempt.worker_id,
    )

"""The only module that knows SAQ's internals (saq 0.26): how ``RedisQueue``
lays a job out in Redis, and what SAQ's worker state says about a running job.

- ``JobStore``: each change of a job's state in one Lua script (re-queue,
  finish with its dead letter, the finished job kept without its message or
  deleted), only if the stored job is still what the caller expects;
- ``touch``: the heartbeat, as a compare-and-set;
- ``worker_cancel_cause``: why SAQ's worker cancels an attempt.

Each workaround names its upstream issue; the reasoning and everything this
relies on (pinned by ``tests/test_saq_pin.py``) is in docs/notifier.md
("The SAQ layer").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from redis.exceptions import WatchError
from saq import Job, Status, Worker
from saq.queue.redis import RedisQueue
from saq.utils import now

SUPPORTED_SAQ = ((0, 26), (0, 27))
"""saq versions whose Redis layout this module matches: at least the first, below the second."""

_SNAPSHOT = """
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

_GUARD = """
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
if ARGV[1] == 'exact' then
  if stored ~= ARGV[2] then return 0 end
else
  local job = cjson.decode(stored)
  if job['status'] ~= 'active' and job['status'] ~= 'aborting' then return 0 end
  if (tonumber(job['attempts']) or 0) ~= tonumber(ARGV[2]) then return 0 end
  local worker = job['worker_id']
  if type(worker) ~= 'string' then worker = '' end
  if worker ~= ARGV[3] then return 0 end
end
"""
"""Return 0 unless the stored job is the expected one (ARGV[1..3], see ``_guard``)."""

_REQUEUE = (
    _GUARD
    + """
redis.call('LREM', KEYS[2], 0, KEYS[1])
redis.call('LREM', KEYS[3], 0, KEYS[1])
redis.call('ZADD', KEYS[4], ARGV[5], KEYS[1])
if ARGV[6] == '1' then redis.call('RPUSH', KEYS[3], KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('PUBLISH', KEYS[1], 'queued')
return 1
"""
)
"""KEYS: job, active, queued, incomplete. ARGV: guard (3), the job as re-queued,
its incomplete score, '1' to push it on the queue now (SAQ ``_retry``)."""

_FINISH = (
    _GUARD
    + """
redis.call('LREM', KEYS[2], 0, KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[4])
elseif ttl == 0 then
  redis.call('SET', KEYS[1], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
local added = 0
if #KEYS == 5 then
  added = redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[9], ARGV[7])
end
redis.call('PUBLISH', KEYS[1], ARGV[6])
return {1, added}
"""
)
"""KEYS: job, active, incomplete[, letters hash, letters index]. ARGV: guard (3),
the finished job, its ttl, its status[, letter id, letter JSON, failed_at] (SAQ
``_finish``, plus ``DeadLetters.add``)."""


@dataclass(frozen=True)
class Attempt:
    """One run of a job: its attempt count and worker, as the worker marked it active."""

    attempts: int
    worker_id: str | None

    @classmethod
    def of(cls, job: Job) -> Attempt:
        return cls(job.attempts, job.worker_id)


Expected = Attempt | bytes
"""What a change requires of the stored job: this attempt, still running; or
exactly these bytes (what the sweeper read)."""


@dataclass(frozen=True, kw_only=True)
class LetterWrite:
    """A dead letter stored in the step that fails its job (``DeadLetters``' layout)."""

    letters_key: str
    index_key: str
    message_id: str
    letter_json: str
    failed_at: float


@dataclass(frozen=True)
class Finished:
    """What ``JobStore.finish`` did."""

    done: bool
    """The job was finished; ``False``: it was no longer as expected, nothing changed."""
    letter_added: bool = False
    """A dead letter of that id was not stored before."""


class JobStore:
    """The jobs of one ``RedisQueue``, changed one step at a time.

    Workaround for SAQ's sweep, which aborts a stuck job (off every list), waits,
    then retries it in separate calls: a process dying in between lost the job
    (Herald's chaos run, 1 in 1,000; upstream: tobymao/saq#277). Here no state of
    a job that is not terminal is outside ``incomplete``/``queued``/``active``.
    A re-queue raises no abort key: SAQ's worker stops a job by its stored status
    only, and the key names the job, not the attempt (pinned in test_saq_pin).
    """

    def __init__(self, queue: RedisQueue) -> None:
        self.queue = queue
        self.active = queue.namespace("active")
        self.queued = queue.namespace("queued")
        self.incomplete = queue.namespace("incomplete")
        self.sweep_lock = queue.namespace("sweep")
        self._snapshot = queue.redis.register_script(_SNAPSHOT)
        self._requeue = queue.redis.register_script(_REQUEUE)
        self._finish = queue.redis.register_script(_FINISH)

    async def snapshot_active(self, *, lock: int) -> list[tuple[str, bytes | None]] | None:
        """Each id of the active list with its stored job, taking the sweep lock
        for ``lock`` s; ``None`` if another worker holds it."""
        id_jobs = await self._snapshot(keys=[self.sweep_lock, self.active], args=[lock])
        if id_jobs is None:
            return None
        return [(_text(job_id), job_bytes or None) for job_id, job_bytes in id_jobs]

    async def drop_missing(self, job_id: str) -> None:
        """Take the id of a job that no longer exists off the lists."""
        async with self.queue.redis.pipeline(transaction=True) as pipe:
            pipe.lrem(self.active, 0, job_id)
            pipe.zrem(self.incomplete, job_id)
            await pipe.execute()

    async def requeue(self, job: Job, *, expected: Expected, error: str | None) -> bool:
        """Re-queue ``job`` as a retry (``Queue.retry``'s fields, due after its
        retry delay), if the stored job is ``expected``; ``True`` if done."""
        delay = job.next_retry_delay()
        job.status = Status.QUEUED
        job.error = error
        job.completed = job.started = 0
        job.progress = 0
        job.touched = now()
        score, push = (time.time() + delay, "0") if delay else (job.scheduled, "1")
        done = await self._requeue(
            keys=[job.id, self.active, self.queued, self.incomplete],
            args=[*_guard(expected), self.queue.serialize(job), score, push],
        )
        return bool(done)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        expected: Expected,
        result: Any = None,
        error: str | None = None,
        letter: LetterWrite | None = None,
        keep_seconds: int | None = None,
    ) -> Finished:
        """End ``job`` with ``status`` (``Queue.finish``'s fields), storing
        ``letter`` in the same step, if the stored job is ``expected``.

        The finished job is stored without its kwargs (the message: address and
        name), for ``keep_seconds`` with SAQ's ``ttl`` meaning (> 0: that long, 0:
        forever, -1: deleted at once); ``None``: the job's own ``ttl``.
        """
        job.status = status
        job.result = result
        job.error = error
        job.completed = now()
        if status == Status.COMPLETE:
            job.progress = 1.0
        ttl = job.ttl if keep_seconds is None else keep_seconds
        keys = [job.id, self.active, self.incomplete]
        args: list[Any] = [*_guard(expected), self._without_kwargs(job), ttl, status.value]
        if letter is not None:
            keys += [letter.letters_key, letter.index_key]
            args += [letter.message_id, letter.letter_json, letter.failed_at]
        outcome = await self._finish(keys=keys, args=args)
        if not outcome:
            return Finished(done=False)
        return Finished(done=True, letter_added=bool(outcome[1]))

    def _without_kwargs(self, job: Job) -> bytes | str:
        kwargs, job.kwargs = job.kwargs, None
        try:
            return self.queue.serialize(job)
        finally:
            job.kwargs = kwargs


def _guard(expected: Expected) -> list[str | bytes]:
    if isinstance(expected, bytes):
        return ["exact", expected, ""]
    return ["attempt", str(expected.attempts), expected.worker_id or ""]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def touch(job: Job) -> bool | None:
    """Refresh ``job``'s ``touched`` in Redis if the stored job is still this
    attempt (active, same attempt count, same worker).

    Instead of SAQ's ``Job.update()``, whose read-then-write can turn the
    sweeper's ``aborting`` back into ``active`` or overwrite the next attempt's
    record (no upstream issue filed; docs/notifier.md).

    Returns ``True`` once touched, ``False`` if the job is no longer this
    attempt's, ``None`` if undecided (the sweeper is aborting it, or it
    changed while we looked: try again next beat).
    """
    queue = job.get_queue()
    if not isinstance(queue, RedisQueue):
        await job.update()
        return True
    async with queue.redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(job.id)
            stored = queue.deserialize(await pipe.get(job.id))
            if (
                stored is None
                or stored.status not in (Status.ACTIVE, Status.ABORTING)
                or stored.attempts != job.attempts
                or stored.worker_id != job.worker_id
            ):
                return False
            if stored.status == Status.ABORTING:
                # SAQ's abort (the sweeper, or an operator) decides; our keeping
                # it alive would hide the abort from the worker's abort check.
                return None
            stored.touched = now()
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(job.id, queue.serialize(stored))
            await pipe.execute()
        except WatchError:
            return None
    job.touched = stored.touched
    return True


WorkerCancelCause = Literal["aborted", "shutdown", "timeout", "cancelled"]


def worker_cancel_cause(ctx: dict[str, Any], job: Job) -> WorkerCancelCause:
    """Why SAQ's worker is cancelling the attempt running with ``ctx``, as its
    state shows it: ``aborted`` (an operator, or the sweeper of a job it took
    for stuck), ``shutdown`` (the worker is stopping; SAQ re-queues the job),
    ``timeout`` (``job.timeout``), else ``cancelled``."""
    worker = ctx.get("worker")
    if isinstance(worker, Worker):
        running = worker.job_task_contexts.get(job)
        if running is not None and running["aborted"] is not None:
            return "aborted"
        if worker.event.is_set():
            return "shutdown"
    if job.timeout and job.started and (now() - job.started) / 1000 >= job.timeout - 0.5:
        return "timeout"
    return "cancelled"

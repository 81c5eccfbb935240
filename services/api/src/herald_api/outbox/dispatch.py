"""The outbox fast path: a service stages a message in its transaction, and once that
committed the dispatcher pushes it to Redis at once; whatever it could not push stays
pending for the relay. Pushed rows are marked relayed in batches after the response
(``RelayedMarks``). docs/api.md says why.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import suppress

import structlog
from redis.exceptions import RedisError
from saq import Job, Queue
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.db import DATABASE_ERRORS
from herald_api.core.errortext import describe
from herald_api.outbox import table as outbox
from herald_api.outbox.forget import Forgotten, forget_messages
from herald_api.outbox.metrics import MESSAGES_ENQUEUE_FAILED, MESSAGES_ENQUEUED
from herald_shared.messages import Message
from herald_shared.tasks import enqueue, task_for

log = structlog.get_logger(__name__)

PUSH_ERRORS = (RedisError, OSError, TimeoutError)
"""What a push raises when Redis is down, unreachable or too slow."""

PAUSE_AFTER_FAILURE_SECONDS = 1.0
"""After a failed push, how long signups skip the fast path and leave the row to the relay.

During an outage every push attempt resolves and connects anew; at signup
concurrency those lookups fill the event loop's default thread pool, which
the database driver needs too, and signups slow to seconds. One probe a
second is enough: the relay drains the rest within about a second of Redis
returning.
"""


class RedisUnavailableError(ConnectionError):
    """The fast path is paused after a recent failed push."""


class RelayedMarks:
    """Marks pushed outbox rows relayed, many per transaction, every ``interval_seconds``.

    A mark that never lands (a crash, a database failure) costs one more push
    by the relay after the row's grace period: SAQ's job key refuses it while
    the first job is in flight, and the notifier's delivery record after that.
    So marks may wait and batch; failed ones are retried on the next tick.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        interval_seconds: float = 0.1,
    ) -> None:
        self.sessions = sessions
        self.interval_seconds = interval_seconds
        self._pending: set[uuid.UUID] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, message_id: uuid.UUID) -> None:
        """Mark ``message_id``'s row relayed with the next batch."""
        self._pending.add(message_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relayed-marks")

    async def stop(self) -> None:
        """Stop ticking, then write what is pending (a shutdown should not cost re-pushes)."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Mark every pending row now; how many rows were marked (rows a relay holds are not)."""
        if not self._pending:
            return 0
        batch = list(self._pending)
        self._pending.clear()
        try:
            async with self.sessions() as session:
                marked = await outbox.mark_relayed(session, batch)
                await session.commit()
        except Exception as exc:
            self._pending.update(batch)
            log.warning(
                "outbox.update_failed",
                messages=len(batch),
                error=describe(exc),
                exc_info=not isinstance(exc, DATABASE_ERRORS),
            )
            return 0
        return marked

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.flush()


class Dispatcher:
    """Stages messages in a caller's transaction and pushes them after its commit."""

    def __init__(
        self,
        queues: Mapping[str, Queue],
        *,
        marks: RelayedMarks,
        timeout_seconds: float,
        grace_seconds: float,
    ) -> None:
        """``queues``: each base queue name (``herald_shared.queues``) and its connected queue."""
        self.queues = queues
        self.marks = marks
        self.timeout_seconds = timeout_seconds
        self.grace_seconds = grace_seconds
        self._paused_until = 0.0
        self._last_failure = ""

    async def stage(self, session: AsyncSession, message: Message) -> None:
        """Write ``message`` to the outbox in ``session``'s transaction; the caller commits."""
        await outbox.stage(session, message, grace_seconds=self.grace_seconds)

    async def publish_after_commit(
        self, session: AsyncSession, message: Message, *, user_id: uuid.UUID
    ) -> bool:
        """Push a staged, committed ``message`` to Redis; its row is marked relayed
        with the next batch of ``marks``.

        On a Redis failure, log it with ``user_id`` and return False: the row
        stays pending (due at once) for the relay. The transaction has
        committed, so no failure here may turn a created account into an error
        response; database failures are logged too.
        """
        message_type = type(message).__name__
        queue = self.queues[task_for(message).queue]
        try:
            job = await self._push(queue, message)
        except Exception as exc:
            # Committed already: whatever the push raised (Redis down, or a client
            # bug on a connection Redis just dropped), the relay will push the row.
            MESSAGES_ENQUEUE_FAILED.labels(message_type).inc()
            log.error(
                "message.enqueue_failed",
                user_id=str(user_id),
                message_id=str(message.message_id),
                message_type=message_type,
                error=describe(exc),
                exc_info=not isinstance(exc, PUSH_ERRORS),
            )
            await self._settle(
                session,
                message,
                outbox.retry_soon(session, message.message_id, error=describe(exc)),
            )
            return False
        MESSAGES_ENQUEUED.labels(message_type).inc()
        log.info(
            "message.enqueued",
            user_id=str(user_id),
            message_id=str(message.message_id),
            message_type=message_type,
            queue=queue.name,
            # None: a job with this key was already in flight (the relay was faster).
            already_queued=job is None,
        )
        self.marks.add(message.message_id)
        return True

    async def forget(
        self, *, user_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
    ) -> Forgotten | None:
        """After a deleted account's commit, forget in Redis what it still holds of
        ``user_id``: its messages (``message_ids``, from its deleted outbox rows) and dead
        letters (``herald_api.outbox.forget``). ``None`` if Redis failed: logged, never
        raised (the deletion committed)."""
        total = Forgotten()
        try:
            for queue in self.queues.values():
                if not isinstance(queue, RedisQueue):
                    continue
                async with asyncio.timeout(self.timeout_seconds):
                    done = await forget_messages(
                        queue.redis, queue_name=queue.name, user_id=user_id, message_ids=message_ids
                    )
                total += done
        except Exception as exc:
            # Its queued jobs may still be sent, and its dead letters stay, until an
            # operator deletes them (the log says whose).
            log.error(
                "user.redis_forget_failed",
                user_id=str(user_id),
                messages=len(message_ids),
                error=describe(exc),
                exc_info=not isinstance(exc, PUSH_ERRORS),
            )
            return None
        return total

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        """``enqueue`` with a timeout, paused for a while after a failure."""
        if time.monotonic() < self._paused_until:
            raise RedisUnavailableError(f"fast path paused after {self._last_failure}")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await enqueue(queue, message)
        except Exception as exc:
            self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
            self._last_failure = describe(exc)
            raise

    async def _settle(
        self,
        session: AsyncSession,
        message: Message,
        change: Awaitable[object],
    ) -> None:
        """Run the outbox update ``change`` and commit it; log a database failure."""
        try:
            await change
            await session.commit()
        except Exception as exc:
            # The row stays as it was: pending, so the relay pushes it (again);
            # the job key refuses the duplicate while the first is in flight.
            # Committed already, so no failure here may become an error response.
            log.warning(
                "outbox.update_failed",
                message_id=str(message.message_id),
                error=describe(exc),
                exc_info=not isinstance(exc, DATABASE_ERRORS),
            )
            with suppress(Exception):
                await session.rollback()

"""The outbox relay: push every message the fast path could not, until none is pending.

One relay runs in each API process. A pass claims due rows (``FOR UPDATE SKIP
LOCKED``: replicas share the work), pushes them, and in the same transaction marks
the pushed rows relayed and defers the rest; a failed pass is retried after a backoff.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog
from saq import Job, Queue
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.db import DATABASE_ERRORS
from herald_api.core.errortext import describe
from herald_api.outbox import table as outbox
from herald_api.outbox.dispatch import PUSH_ERRORS
from herald_api.outbox.metrics import (
    OUTBOX_OLDEST_UNSETTLED,
    OUTBOX_PENDING,
    OUTBOX_RELAY_ERRORS,
    OUTBOX_RELAYED,
)
from herald_api.outbox.models import OutboxMessage
from herald_shared.messages import Message
from herald_shared.tasks import TASKS, enqueue

log = structlog.get_logger(__name__)

BACKOFF_BASE_SECONDS = outbox.BACKOFF_BASE_SECONDS
"""The loop's first delay after a failed pass; it doubles per failure up to a cap."""

STOP_GRACE_SECONDS = 5.0
"""How long ``stop()`` lets a pass in progress finish before cancelling it."""


@dataclass
class PassResult:
    """What one pass did."""

    claimed: int = 0
    relayed: Counter[str] = field(default_factory=Counter)
    """Rows pushed and marked relayed, by message type."""
    already_queued: int = 0
    """Of those, rows whose job was already in flight (SAQ refused the duplicate key)."""
    deferred: int = 0
    rejected: int = 0
    pending: int = 0
    """Rows still pending after the pass."""
    oldest_unsettled_seconds: float = 0.0
    """Age of the oldest row whose delivery is not confirmed yet."""
    push_error: str | None = None


class Relay:
    """Pushes the outbox's due pending rows to their queues, in a loop of passes."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queues: Mapping[str, Queue],
        batch_size: int,
        poll_seconds: float,
        max_backoff_seconds: float,
        push_timeout_seconds: float,
    ) -> None:
        """``queues``: each base queue name (``herald_shared.queues``) and its connected queue."""
        self.sessions = sessions
        self.queues = queues
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.push_timeout_seconds = push_timeout_seconds
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the loop in a background task until ``stop()``."""
        self._stopping.clear()
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self, *, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        """Stop after the pass in progress (cancelled if it takes over ``grace_seconds``)."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        _, unfinished = await asyncio.wait({task}, timeout=grace_seconds)
        if unfinished:
            # Rows it pushed but did not mark stay pending and are pushed again:
            # at least once, never lost.
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def run(self) -> None:
        """Relay until stopped. Never raises: a failed pass is logged and retried."""
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                result = await self.relay_once()
            except Exception as exc:
                backoff = self._next_backoff(backoff)
                self._pass_failed(exc, retry_in_seconds=backoff)
                delay = backoff
            else:
                if result.push_error is not None:
                    backoff = self._next_backoff(backoff)
                    delay = backoff
                else:
                    backoff = 0.0
                    # A full batch means more may be due right now.
                    delay = 0.0 if result.claimed >= self.batch_size else self.poll_seconds
            await self._sleep(delay)

    async def relay_once(self) -> PassResult:
        """One pass: claim due rows, push them, settle them, all in one transaction.

        Raises what PostgreSQL raises; a Redis failure ends the pushes of the
        pass (the unpushed rows are deferred) and is reported in the result.
        """
        started = time.perf_counter()
        result = PassResult()
        async with self.sessions() as session:
            rows = await outbox.claim(session, limit=self.batch_size)
            result.claimed = len(rows)
            pushed: list[uuid.UUID] = []
            unpushed: list[uuid.UUID] = []
            for index, row in enumerate(rows):
                try:
                    queue, message = self._prepare(row)
                except (LookupError, ValueError) as exc:
                    await self._reject(session, row, exc)
                    result.rejected += 1
                    continue
                try:
                    job = await self._push(queue, message)
                except PUSH_ERRORS as exc:
                    result.push_error = describe(exc)
                    unpushed = [later.message_id for later in rows[index:]]
                    break
                pushed.append(row.message_id)
                result.relayed[type(message).__name__] += 1
                result.already_queued += job is None
            await outbox.mark_all_relayed(session, pushed)
            if result.push_error is not None:
                await outbox.defer(
                    session,
                    unpushed,
                    error=result.push_error,
                    max_delay_seconds=self.max_backoff_seconds,
                )
                result.deferred = len(unpushed)
            result.pending = await outbox.count_pending(session)
            result.oldest_unsettled_seconds = await outbox.oldest_unsettled_seconds(session)
            await session.commit()
        self._report(result, seconds=time.perf_counter() - started)
        return result

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        """Push one message within the push timeout; ``None``: its job was in flight already."""
        async with asyncio.timeout(self.push_timeout_seconds):
            return await enqueue(queue, message)

    def _prepare(self, row: OutboxMessage) -> tuple[Queue, Message]:
        message = outbox.message_of(row)
        if row.queue != TASKS[row.task].queue or row.queue not in self.queues:
            raise LookupError(f"{row.task} cannot go to queue {row.queue!r}")
        return self.queues[row.queue], message

    async def _reject(self, session: AsyncSession, row: OutboxMessage, exc: Exception) -> None:
        # Retrying cannot fix the row; keep it (for a human) out of every later batch.
        await outbox.set_aside(session, row.message_id, error=describe(exc))
        OUTBOX_RELAY_ERRORS.labels("rejected").inc()
        log.error(
            "outbox.message_rejected",
            message_id=str(row.message_id),
            task=row.task,
            queue=row.queue,
            error=str(exc),
        )

    def _report(self, result: PassResult, *, seconds: float) -> None:
        OUTBOX_PENDING.set(result.pending)
        OUTBOX_OLDEST_UNSETTLED.set(result.oldest_unsettled_seconds)
        for message_type, count in result.relayed.items():
            OUTBOX_RELAYED.labels(message_type).inc(count)
        if result.push_error is not None:
            OUTBOX_RELAY_ERRORS.labels("redis").inc()
            log.error(
                "outbox.push_failed",
                error=result.push_error,
                relayed=result.relayed.total(),
                deferred=result.deferred,
                pending=result.pending,
            )
        elif result.claimed:
            log.info(
                "outbox.relayed",
                relayed=result.relayed.total(),
                already_queued=result.already_queued,
                rejected=result.rejected,
                pending=result.pending,
                duration_ms=round(seconds * 1000, 1),
            )

    def _pass_failed(self, exc: Exception, *, retry_in_seconds: float) -> None:
        if isinstance(exc, DATABASE_ERRORS):
            OUTBOX_RELAY_ERRORS.labels("database").inc()
            log.error("outbox.relay_failed", error=describe(exc), retry_in_seconds=retry_in_seconds)
        else:
            OUTBOX_RELAY_ERRORS.labels("other").inc()
            log.exception("outbox.relay_failed", retry_in_seconds=retry_in_seconds)

    def _next_backoff(self, current: float) -> float:
        return min(max(BACKOFF_BASE_SECONDS, current * 2), self.max_backoff_seconds)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if ``stop()`` is called meanwhile."""
        if seconds <= 0:
            await asyncio.sleep(0)  # let the rest of the API run between full batches
            return
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

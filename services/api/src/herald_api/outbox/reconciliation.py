"""The reconciliation: a relayed outbox row leaves the books only once its delivery is known.

A pass (``POST /internal/v1/outbox/reconcile``, from the scheduler) reads the standing
in Redis of each unsettled row last known in flight a while ago, and settles it,
checks it again later, or pushes its lost message again. docs/api.md has the table.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from saq import Job, Queue
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.errortext import describe
from herald_api.outbox import table as outbox
from herald_api.outbox.dispatch import PUSH_ERRORS
from herald_api.outbox.metrics import OUTBOX_OLDEST_UNSETTLED, OUTBOX_RECONCILED
from herald_api.outbox.models import OutboxMessage
from herald_shared.ledger import Standing, read_standings
from herald_shared.messages import Message
from herald_shared.tasks import enqueue

log = structlog.get_logger(__name__)

SETTLED_AS: dict[Standing, outbox.SettledAs] = {
    Standing.SENT: "delivered",
    Standing.COMPLETED: "skipped",
    Standing.DEAD: "dead",
}


class ReconciliationError(Exception):
    """Redis failed during a pass; what was done before is committed."""


@dataclass
class ReconcileResult:
    """What one pass did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    """Rows by outcome: delivered, skipped, dead, waiting, repushed."""
    oldest_unsettled_seconds: float = 0.0

    @property
    def checked(self) -> int:
        return self.outcomes.total()


@dataclass
class _Batch:
    settled: dict[outbox.SettledAs, list[uuid.UUID]] = field(default_factory=dict)
    waiting: list[uuid.UUID] = field(default_factory=list)
    repushed: list[uuid.UUID] = field(default_factory=list)

    def outcomes(self) -> Counter[str]:
        counts: Counter[str] = Counter({as_: len(ids) for as_, ids in self.settled.items()})
        counts["waiting"] += len(self.waiting)
        counts["repushed"] += len(self.repushed)
        return +counts


class Reconciler:
    """Runs reconciliation passes over the outbox on the API's queues."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        queues: Mapping[str, Queue],
        batch_size: int,
        push_timeout_seconds: float,
    ) -> None:
        """``queues``: each base queue name and its connected queue."""
        self.sessions = sessions
        self.queues = queues
        self.batch_size = batch_size
        self.push_timeout_seconds = push_timeout_seconds

    async def reconcile(self, *, unchecked_for: timedelta) -> ReconcileResult:
        """Check every unsettled row last known in flight more than ``unchecked_for`` ago.

        Raises ``ReconciliationError`` when Redis fails (the batch's settled and pushed
        rows are committed first), and what PostgreSQL raises.
        """
        result = ReconcileResult()
        while True:
            async with self.sessions() as session:
                rows = await outbox.claim_unsettled(
                    session, unchecked_for=unchecked_for, limit=self.batch_size
                )
                batch = _Batch()
                failure: Exception | None = None
                try:
                    await self._reconcile_batch(rows, batch)
                except PUSH_ERRORS as exc:
                    failure = exc
                for as_, ids in batch.settled.items():
                    await outbox.settle(session, ids, as_=as_)
                await outbox.mark_checked(session, batch.waiting)
                await outbox.mark_repushed(session, batch.repushed)
                await session.commit()
            _count(batch)
            result.outcomes.update(batch.outcomes())
            if failure is not None:
                raise ReconciliationError(describe(failure)) from failure
            if len(rows) < self.batch_size:
                break
        async with self.sessions() as session:
            result.oldest_unsettled_seconds = await outbox.oldest_unsettled_seconds(session)
        OUTBOX_OLDEST_UNSETTLED.set(result.oldest_unsettled_seconds)
        if result.checked:
            log.info(
                "outbox.reconciled",
                **result.outcomes,
                oldest_unsettled_seconds=round(result.oldest_unsettled_seconds, 1),
            )
        return result

    async def _reconcile_batch(self, rows: Sequence[OutboxMessage], batch: _Batch) -> None:
        """Read the standing of ``rows`` (one pipeline per queue) and sort them into
        ``batch``, pushing the lost ones again as it goes."""
        by_queue: dict[str, list[OutboxMessage]] = {}
        for row in rows:
            by_queue.setdefault(row.queue, []).append(row)
        for queue_name, queued in by_queue.items():
            queue = self.queues.get(queue_name)
            if not isinstance(queue, RedisQueue):
                # A queue this API does not serve (the relay rejects such rows): look later.
                batch.waiting.extend(row.message_id for row in queued)
                continue
            async with asyncio.timeout(self.push_timeout_seconds):
                standings = await read_standings(
                    queue.redis, queue_name=queue.name, message_ids=[r.message_id for r in queued]
                )
            for row in queued:
                standing = standings[str(row.message_id)]
                if standing.settled:
                    as_ = SETTLED_AS[standing]
                    batch.settled.setdefault(as_, []).append(row.message_id)
                    if as_ == "dead":
                        log.warning("outbox.settled_dead", message_id=str(row.message_id))
                elif standing.needs_push and await self._push_again(queue, row, standing):
                    batch.repushed.append(row.message_id)
                else:
                    batch.waiting.append(row.message_id)

    async def _push_again(self, queue: Queue, row: OutboxMessage, standing: Standing) -> bool:
        """Push ``row``'s message again; ``False`` if SAQ refused it (in flight after all)."""
        try:
            message = outbox.message_of(row)
        except (LookupError, ValueError) as exc:
            # Relayed once, so it decoded then: a downgrade? Keep it in the books, visibly.
            log.error("outbox.repush_impossible", message_id=str(row.message_id), error=str(exc))
            return False
        job = await self._push(queue, message)
        if job is None:
            return False
        log.warning(
            "outbox.repushed",
            message_id=str(row.message_id),
            standing=standing.value,
            task=row.task,
            repushes=row.repushes + 1,
        )
        return True

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        """Push one message within the push timeout; ``None``: SAQ refused the duplicate."""
        async with asyncio.timeout(self.push_timeout_seconds):
            return await enqueue(queue, message)


def _count(batch: _Batch) -> None:
    for outcome, count in batch.outcomes().items():
        OUTBOX_RECONCILED.labels(outcome).inc(count)

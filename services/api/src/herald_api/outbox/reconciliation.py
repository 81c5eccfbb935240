"""The reconciliation: a relayed outbox row leaves the books only once its delivery is known.

SAQ taking a job is not delivery: Redis may lose its last second of writes
(a host crash under ``appendfsync everysec``), or a job may be stranded (a
sweep that died half-way). So a pass, run by the scheduler through
``POST /internal/v1/outbox/reconcile``, takes the unsettled rows whose message
was last known in flight more than a few minutes ago, reads each message's
standing in Redis through the shared contract (``herald_shared.ledger``: one
pipeline per batch, no scan), and acts:

- ``sent`` → settle the row ``delivered``; a job completed unsent (its link
  had expired) → settle it ``skipped``;
- a dead letter → settle it ``dead``, logged (``outbox.settled_dead``) and counted;
- a job that will still run → check again after the interval;
- no job, or a job that will never run and settled nothing → push the message
  again (``outbox.repushed``, counted): if it had gone out after all, the
  notifier's delivery record acknowledges it without a second send.

Batches are claimed with ``FOR UPDATE SKIP LOCKED`` in short transactions, so
any number of API replicas and overlapping runs share the work safely.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from saq import Queue
from saq.queue.redis import RedisQueue
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import OutboxMessage
from herald_api.core.errortext import describe
from herald_api.core.faults import NO_FAULTS, Faults
from herald_api.core.metrics import OUTBOX_OLDEST_UNSETTLED, OUTBOX_RECONCILED
from herald_api.outbox import table as outbox
from herald_api.outbox.dispatch import PUSH_ERRORS
from herald_shared.ledger import Standing, read_standings
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


async def reconcile(
    *,
    sessions: async_sessionmaker[AsyncSession],
    queues: Mapping[str, Queue],
    unchecked_for: timedelta,
    batch_size: int,
    push_timeout_seconds: float,
    faults: Faults = NO_FAULTS,
) -> ReconcileResult:
    """Check every unsettled row last known in flight more than ``unchecked_for`` ago.

    ``queues``: each base queue name and its connected queue. Raises
    ``ReconciliationError`` when Redis fails (the batch's settled and pushed
    rows are committed first), and what PostgreSQL raises.
    """
    result = ReconcileResult()
    while True:
        async with sessions() as session:
            rows = await outbox.claim_unsettled(
                session, unchecked_for=unchecked_for, limit=batch_size
            )
            batch = _Batch()
            failure: Exception | None = None
            try:
                await _reconcile_batch(
                    rows,
                    batch,
                    queues=queues,
                    push_timeout_seconds=push_timeout_seconds,
                    faults=faults,
                )
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
        if len(rows) < batch_size:
            break
    async with sessions() as session:
        result.oldest_unsettled_seconds = await outbox.oldest_unsettled_seconds(session)
    OUTBOX_OLDEST_UNSETTLED.set(result.oldest_unsettled_seconds)
    if result.checked:
        log.info(
            "outbox.reconciled",
            **result.outcomes,
            oldest_unsettled_seconds=round(result.oldest_unsettled_seconds, 1),
        )
    return result


async def _reconcile_batch(
    rows: Sequence[OutboxMessage],
    batch: _Batch,
    *,
    queues: Mapping[str, Queue],
    push_timeout_seconds: float,
    faults: Faults,
) -> None:
    """Read the standing of ``rows`` (one pipeline per queue) and sort them into ``batch``,
    pushing the lost ones again as it goes."""
    by_queue: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    for queue_name, queued in by_queue.items():
        queue = queues.get(queue_name)
        if not isinstance(queue, RedisQueue):
            # A queue this API does not serve (the relay rejects such rows): look later.
            batch.waiting.extend(row.message_id for row in queued)
            continue
        async with asyncio.timeout(push_timeout_seconds):
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
            elif standing.needs_push and await _push_again(
                queue, row, standing, push_timeout_seconds=push_timeout_seconds, faults=faults
            ):
                batch.repushed.append(row.message_id)
            else:
                batch.waiting.append(row.message_id)


async def _push_again(
    queue: Queue,
    row: OutboxMessage,
    standing: Standing,
    *,
    push_timeout_seconds: float,
    faults: Faults,
) -> bool:
    """Push ``row``'s message again; ``False`` if SAQ refused it (in flight after all)."""
    try:
        message = outbox.message_of(row)
    except (LookupError, ValueError) as exc:
        # Relayed once, so it decoded then: a downgrade? Keep it in the books, visibly.
        log.error("outbox.repush_impossible", message_id=str(row.message_id), error=str(exc))
        return False
    async with asyncio.timeout(push_timeout_seconds):
        job = await enqueue(queue, message)
    if job is None:
        return False
    log.warning(
        "outbox.repushed",
        message_id=str(row.message_id),
        standing=standing.value,
        task=row.task,
        repushes=row.repushes + 1,
    )
    faults.reach("reconcile_after_push", message_id=str(row.message_id))
    return True


def _count(batch: _Batch) -> None:
    for outcome, count in batch.outcomes().items():
        OUTBOX_RECONCILED.labels(outcome).inc(count)

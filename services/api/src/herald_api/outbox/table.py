"""The outbox table's SQL: what the fast path, the relay, the reconciliation and the purge
do to it. Every time is PostgreSQL's clock, so replicas agree on when a row is due
(docs/api.md explains the row's life).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Select,
    column,
    delete,
    func,
    insert,
    literal_column,
    update,
)
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from herald_api.core.db import among, delete_in_batches
from herald_api.outbox.models import OutboxMessage
from herald_shared.messages import AccountEmail, Message
from herald_shared.tasks import TASKS, task_for

BACKOFF_BASE_SECONDS = 0.1
"""A failed row's first retry delay; it doubles with each attempt up to a cap."""

NEVER: ColumnElement[datetime] = literal_column("'infinity'::timestamptz")
"""The ``available_at`` of a row set aside: it stays pending (and counted) but is never due."""


async def stage(session: AsyncSession, message: Message, *, grace_seconds: float) -> None:
    """Insert ``message`` into the outbox in ``session``'s transaction (its owner commits).

    The relay leaves the row alone for ``grace_seconds``: the time the fast
    path has to push it right after the commit.
    Raises ``MessageError`` if the message is invalid, before writing anything.
    """
    task = task_for(message)
    payload = message.encode()
    # Validate now: an invalid message must fail its transaction, not become a row
    # the relay can never push.
    task.message.decode(payload)
    await session.exec(
        insert(OutboxMessage).values(
            message_id=message.message_id,
            task=task.name,
            queue=task.queue,
            payload=payload,
            user_id=message.user_id if isinstance(message, AccountEmail) else None,
            available_at=func.now() + timedelta(seconds=grace_seconds),
        )
    )


def _pending_and_unlocked(message_ids: Sequence[uuid.UUID]) -> SelectOfScalar[uuid.UUID]:
    # SKIP LOCKED: a relay that holds a row will settle it itself; neither a
    # request nor the batched marks may wait for the relay's batch (which may
    # be waiting on Redis).
    return (
        select(col(OutboxMessage.message_id))
        .where(col(OutboxMessage.message_id).in_(message_ids), _pending())
        .with_for_update(skip_locked=True)
    )


async def mark_relayed(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> int:
    """Mark pending rows relayed, skipping rows a relay holds; how many were marked."""
    result = await session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.message_id).in_(_pending_and_unlocked(message_ids)))
        .values(relayed_at=func.now(), checked_at=func.now())
    )
    return int(result.rowcount)


async def retry_soon(session: AsyncSession, message_id: uuid.UUID, *, error: str) -> None:
    """After a failed fast-path push: make the row due now, so the relay retries it promptly."""
    await session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.message_id).in_(_pending_and_unlocked([message_id])))
        .values(
            available_at=func.now(),
            attempts=col(OutboxMessage.attempts) + 1,
            last_error=error,
        )
    )


async def claim(session: AsyncSession, *, limit: int) -> Sequence[OutboxMessage]:
    """Lock up to ``limit`` due pending rows, oldest due first, skipping rows others hold.

    The locks last until ``session``'s transaction ends, so concurrent relays
    (one per API replica) never push the same row at the same time.
    """
    result = await session.exec(
        select(OutboxMessage)
        .where(_pending(), col(OutboxMessage.available_at) <= func.now())
        .order_by(col(OutboxMessage.available_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.all()


async def mark_all_relayed(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> None:
    """Mark claimed rows relayed (SAQ took their jobs)."""
    await _update(session, message_ids, relayed_at=func.now(), checked_at=func.now())


async def defer(
    session: AsyncSession,
    message_ids: Sequence[uuid.UUID],
    *,
    error: str,
    max_delay_seconds: float,
) -> None:
    """Count a failed push against claimed rows and make each due again after a backoff.

    The delay doubles per attempt from ``BACKOFF_BASE_SECONDS`` up to
    ``max_delay_seconds``, so a long outage never pushes a row far into the future.
    """
    if not message_ids:
        return
    delay = func.least(
        BACKOFF_BASE_SECONDS * func.power(2, col(OutboxMessage.attempts)), max_delay_seconds
    )
    await session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.message_id).in_(message_ids))
        .values(
            attempts=col(OutboxMessage.attempts) + 1,
            last_error=error,
            # clock_timestamp(): the push may have waited; now() is the transaction's start.
            available_at=func.clock_timestamp() + func.make_interval(0, 0, 0, 0, 0, 0, delay),
        )
    )


async def set_aside(session: AsyncSession, message_id: uuid.UUID, *, error: str) -> None:
    """Keep a row that can never be pushed (malformed, unknown task) out of the relay's way.

    It stays pending, so the pending gauge shows it until someone repairs or deletes it.
    """
    await session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.message_id) == message_id)
        .values(attempts=col(OutboxMessage.attempts) + 1, last_error=error, available_at=NEVER)
    )


async def count_pending(session: AsyncSession) -> int:
    """Rows not relayed yet (including rows set aside)."""
    result = await session.exec(select(func.count()).select_from(OutboxMessage).where(_pending()))
    return int(result.one())


async def oldest_unsettled_seconds(session: AsyncSession) -> float:
    """Age of the oldest row not settled yet, pending or relayed (0 when none): one index probe."""
    result = await session.exec(
        select(func.extract("epoch", func.now() - func.min(col(OutboxMessage.created_at)))).where(
            _unsettled()
        )
    )
    age = result.one()
    return float(age) if age is not None else 0.0


SettledAs = Literal["delivered", "dead", "skipped"]
"""How a row left the books: its message was sent, dead-lettered, or completed unsent."""


async def claim_unsettled(
    session: AsyncSession, *, unchecked_for: timedelta, limit: int
) -> Sequence[OutboxMessage]:
    """Lock up to ``limit`` relayed, unsettled rows whose message was last known in
    flight more than ``unchecked_for`` ago, least recently checked first.

    SKIP LOCKED: two reconciliations (or a relay) never hold one row at once.
    """
    result = await session.exec(
        select(OutboxMessage)
        .where(_unsettled(), col(OutboxMessage.checked_at) < func.now() - unchecked_for)
        .order_by(col(OutboxMessage.checked_at))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return result.all()


async def settle(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], *, as_: SettledAs
) -> None:
    """Take claimed rows off the books: their message's fate is known."""
    await _update(session, message_ids, settled_at=func.now(), settled_as=as_)


async def mark_checked(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> None:
    """Claimed rows whose message is still in flight: look again after the interval."""
    await _update(session, message_ids, checked_at=func.now())


async def mark_repushed(session: AsyncSession, message_ids: Sequence[uuid.UUID]) -> None:
    """Claimed rows whose lost message SAQ took again: relayed (and checked) now."""
    await _update(
        session,
        message_ids,
        relayed_at=func.now(),
        checked_at=func.now(),
        repushes=col(OutboxMessage.repushes) + 1,
    )


async def _update(
    session: AsyncSession, message_ids: Sequence[uuid.UUID], **values: object
) -> None:
    """Set ``values`` on the rows of ``message_ids`` (claimed by the caller); none: no query."""
    if message_ids:
        await session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.message_id).in_(message_ids))
            .values(**values)
        )


def message_of(row: OutboxMessage) -> Message:
    """The message a row holds, decoded by its task's contract.

    Raises ``LookupError`` for a task the contract does not know and
    ``MessageError`` (a ``ValueError``) for a payload that no longer decodes.
    """
    task = TASKS.get(row.task)
    if task is None:
        raise LookupError(f"unknown task {row.task!r}")
    message: Message = task.message.decode(row.payload)
    return message


PURGE_BATCH_SIZE = 10_000
"""Rows one purge transaction deletes: a long backlog is purged in short transactions."""


async def purge(sessions: async_sessionmaker[AsyncSession], *, older_than_seconds: int) -> int:
    """Delete every row settled more than ``older_than_seconds`` ago; how many were deleted.

    A row not settled is never deleted, however old: its message may still need a push.
    """
    settled_before = func.now() - timedelta(seconds=older_than_seconds)
    # The batch is named by its rows' physical addresses (ctid), read from
    # outbox_settled_idx in its order: the delete then goes straight to each row (a TID
    # scan) instead of descending the primary key once per row, which at millions of
    # rows cost the purge 1.6x its empty-table time (docs/benchmarks.md). Settled rows
    # are never updated, so an address read here still names the same row.
    doomed: Select[tuple[Any]] = (
        sa_select(column("ctid"))
        .select_from(OutboxMessage)
        .where(col(OutboxMessage.settled_at) < settled_before)
        .order_by(col(OutboxMessage.settled_at))
        .limit(PURGE_BATCH_SIZE)
    )
    return await delete_in_batches(
        sessions,
        delete(OutboxMessage).where(among(column("ctid"), doomed)),
        batch_size=PURGE_BATCH_SIZE,
    )


def _pending() -> ColumnElement[bool]:
    return col(OutboxMessage.relayed_at).is_(None)


def _unsettled() -> ColumnElement[bool]:
    return col(OutboxMessage.settled_at).is_(None)

"""Periodic work on accounts that the scheduler triggers (``routers.internal``).

Reminders and purges of unverified accounts, and the purges of spent or
expired link tokens and of expired idempotency keys. Every age is measured on
PostgreSQL's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import delete, func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts.links import LinkPolicy
from herald_api.accounts.models import EmailToken, IdempotencyKey, done_at
from herald_api.accounts.service import stage_verification_email
from herald_api.auth.models import User
from herald_api.core.db import among, delete_in_batches
from herald_api.outbox import Dispatcher

log = structlog.get_logger(__name__)

REMINDER_BATCH_SIZE = 200
"""Users one reminder transaction takes: a backlog is worked through in short transactions."""

PURGE_BATCH_SIZE = 5_000
"""Rows one purge transaction deletes."""


@dataclass(frozen=True)
class Housekeeping:
    """Reminders and purges on the API's database, queue and link policy."""

    sessions: async_sessionmaker[AsyncSession]
    dispatcher: Dispatcher
    links: LinkPolicy

    async def remind_unverified(self, *, older_than: timedelta) -> int:
        """Email one reminder, with a fresh link, to each user unverified for ``older_than``.

        Each user is marked reminded in the transaction that stages the email, and
        claimed with SKIP LOCKED, so concurrent runs (two API replicas, a cron tick
        on each scheduler) never remind anyone twice. Returns how many were reminded.
        """
        reminded = 0
        while True:
            async with self.sessions() as session:
                users = (
                    await session.exec(
                        select(User)
                        .where(
                            col(User.email_verified_at).is_(None),
                            col(User.verification_reminded_at).is_(None),
                            col(User.created_at) < func.now() - older_than,
                        )
                        .order_by(col(User.created_at))
                        .limit(REMINDER_BATCH_SIZE)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                messages = []
                for user in users:
                    message = await stage_verification_email(
                        session, self.dispatcher, user, policy=self.links, reason="reminder"
                    )
                    messages.append((user.id, message))
                if users:
                    await session.exec(
                        update(User)
                        .where(col(User.id).in_([user.id for user in users]))
                        .values(verification_reminded_at=func.now())
                    )
                await session.commit()
                for user_id, message in messages:
                    await self.dispatcher.publish_after_commit(session, message, user_id=user_id)
            reminded += len(messages)
            if len(messages) < REMINDER_BATCH_SIZE:
                return reminded

    async def purge_unverified(self, *, older_than: timedelta) -> int:
        """Delete accounts still unverified ``older_than`` after signup (their tokens cascade)."""
        doomed = (
            select(col(User.id))
            .where(
                col(User.email_verified_at).is_(None),
                col(User.created_at) < func.now() - older_than,
            )
            # Oldest first, in the order of users_unverified_idx: the planner reads the
            # index. Without an order it expects the due rows everywhere (it cannot know
            # that unverified accounts are recent ones) and scans the table for them.
            .order_by(col(User.created_at))
            .limit(PURGE_BATCH_SIZE)
        )
        return await delete_in_batches(
            self.sessions,
            delete(User).where(among(col(User.id), doomed)),
            batch_size=PURGE_BATCH_SIZE,
        )

    async def purge_tokens(self, *, older_than: timedelta) -> int:
        """Delete link tokens spent or expired more than ``older_than`` ago."""
        # least() skips a NULL used_at: "spent or expired before the cutoff", in the
        # form (and the order) of the index email_tokens_done_idx.
        doomed = (
            select(col(EmailToken.id))
            .where(done_at() < func.now() - older_than)
            .order_by(done_at())
            .limit(PURGE_BATCH_SIZE)
        )
        return await delete_in_batches(
            self.sessions,
            delete(EmailToken).where(among(col(EmailToken.id), doomed)),
            batch_size=PURGE_BATCH_SIZE,
        )

    async def purge_idempotency_keys(self, *, older_than: timedelta) -> int:
        """Delete idempotency keys expired more than ``older_than`` ago (an expired key is
        free already; this only reclaims its row)."""
        doomed = (
            select(col(IdempotencyKey.key_hash))
            .where(col(IdempotencyKey.expires_at) < func.now() - older_than)
            .order_by(col(IdempotencyKey.expires_at))
            .limit(PURGE_BATCH_SIZE)
        )
        return await delete_in_batches(
            self.sessions,
            delete(IdempotencyKey).where(among(col(IdempotencyKey.key_hash), doomed)),
            batch_size=PURGE_BATCH_SIZE,
        )

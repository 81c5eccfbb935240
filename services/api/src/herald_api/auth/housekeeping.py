"""The purge of login sessions that ended long ago (``POST /internal/v1/sessions/purge``).

A session ends when it is revoked (logout, ended from the list, reuse, a password
change or reset), when its absolute end ``expires_at`` passes, or when it goes
``SessionPolicy.idle`` without a refresh. It is kept for a while after that (the
scheduler's ``HERALD_SESSION_RETENTION_SECONDS``): a session in force is never
touched, and one that just ended is still there to be looked at.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import LoginSession
from herald_api.auth.sessions import SessionPolicy
from herald_api.core.db import among, delete_in_batches

__all__ = ["PURGE_BATCH_SIZE", "ended_before", "purge_sessions"]

PURGE_BATCH_SIZE = 5_000
"""Sessions one purge transaction deletes."""


def ended_before(cutoff: ColumnElement[datetime], policy: SessionPolicy) -> ColumnElement[bool]:
    """The condition of a session that ended before ``cutoff``: revoked or past its
    absolute end then (``least`` skips a NULL ``revoked_at``: the expression of
    ``sessions_ended_idx``), or unused for the idle time by then (``sessions_last_used_idx``).

    A session in force now has none of these: not revoked, ``expires_at`` ahead, and
    used within the idle time.
    """
    return or_(
        func.least(col(LoginSession.revoked_at), col(LoginSession.expires_at)) < cutoff,
        col(LoginSession.last_used_at) < cutoff - policy.idle,
    )


async def purge_sessions(
    sessions: async_sessionmaker[AsyncSession], *, policy: SessionPolicy, older_than: timedelta
) -> int:
    """Delete the sessions that ended more than ``older_than`` ago, on PostgreSQL's clock,
    in short transactions; how many were deleted."""
    # No order: the two branches are two indexes, read together (a BitmapOr).
    doomed = (
        select(col(LoginSession.id))
        .where(ended_before(func.now() - older_than, policy))
        .limit(PURGE_BATCH_SIZE)
    )
    return await delete_in_batches(
        sessions,
        delete(LoginSession).where(among(col(LoginSession.id), doomed)),
        batch_size=PURGE_BATCH_SIZE,
    )

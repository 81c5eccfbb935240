"""Deleting an account at its owner's request (with the password, again).

The user row goes, and with it (foreign keys) every link token; so do the
user's outbox messages: those not yet pushed to Redis (a welcome, a reset
link...) would otherwise still be emailed to a person who has left, and the
pushed ones, kept for a day, hold their address and name. Messages already
in Redis may still be sent. Every access token of the user is refused from
then on (its user is gone), and the address can sign up again.

Finding a user's outbox rows reads the table's JSON payloads (no index:
deletions are rare, and an index would cost every signup a write).
"""

from __future__ import annotations

import structlog
from sqlalchemy import delete
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts.password_change import WrongPasswordError, confirm_password
from herald_api.auth.models import OutboxMessage, User
from herald_api.auth.passwords import PasswordHasher

log = structlog.get_logger(__name__)


async def delete_account(
    session: AsyncSession, hasher: PasswordHasher, *, user: User, password: str
) -> None:
    """Delete ``user``'s account once ``password`` is confirmed; commits.

    Raises ``WrongPasswordError`` when the password is another one (or it
    changed meanwhile: the account is then left as it is).
    """
    user_id, password_hash = await confirm_password(session, hasher, user=user, password=password)
    deleted = await session.exec(
        delete(User).where(col(User.id) == user_id, col(User.password_hash) == password_hash)
    )
    if deleted.rowcount != 1:
        await session.rollback()
        raise WrongPasswordError
    dropped = await session.exec(
        delete(OutboxMessage).where(OutboxMessage.payload["user_id"].astext == str(user_id))
    )
    await session.commit()
    log.info("user.deleted", user_id=str(user_id), outbox_messages_deleted=dropped.rowcount)

"""Email verification: issuing link tokens, and spending them.

A user holds at most one live verification token: issuing one (welcome,
resend, reminder) deletes the unspent ones, so only the newest link works.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

import structlog
from pydantic import SecretStr
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import email_change
from herald_api.accounts import links as link_tokens
from herald_api.auth.models import User
from herald_api.outbox.dispatch import Dispatcher
from herald_shared.messages import EmailChangedEmail, EmailLink, VerificationEmail
from herald_shared.tokens import Purpose

log = structlog.get_logger(__name__)

PURPOSE: Purpose = "verify_email"


async def issue(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    secret: SecretStr,
    valid_for: timedelta,
    first: bool = False,
) -> EmailLink:
    """Replace ``user_id``'s unspent verification tokens with a new one (no commit);
    the link to email (``link_tokens.issue``)."""
    return await link_tokens.issue(
        session, user_id=user_id, purpose=PURPOSE, secret=secret, valid_for=valid_for, first=first
    )


async def spend(
    session: AsyncSession, dispatcher: Dispatcher, *, token: str, request_id: str | None
) -> tuple[User, EmailChangedEmail | None] | None:
    """Spend an address ``token`` (no commit): a verification link's marks its user
    verified; an email change link's moves the account to the address it
    confirms (``email_change.apply_change``, which may raise
    ``AddressTakenError``) and stages the notice to the previous address.

    Returns the user and that notice (to publish after the commit), or
    ``None`` when the token is unknown, spent, expired or made for another
    purpose (one answer for all).
    """
    spent = await link_tokens.spend(session, token=token, purposes=(PURPOSE, email_change.PURPOSE))
    if spent is None:
        return None
    if spent.purpose == email_change.PURPOSE:
        assert spent.new_email is not None  # issued with one
        return await email_change.apply_change(
            session,
            dispatcher,
            user_id=spent.user_id,
            new_email=spent.new_email,
            request_id=request_id,
        )
    await mark_verified(session, user_id=spent.user_id)
    user = await session.get(User, spent.user_id, populate_existing=True)
    assert user is not None  # its token row, which references it, was just spent
    return user, None


async def mark_verified(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """Mark ``user_id``'s address verified, unless it already is (no commit)."""
    await session.exec(
        update(User)
        .where(col(User.id) == user_id, col(User.email_verified_at).is_(None))
        .values(email_verified_at=func.now())
    )


async def stage_link_email(
    session: AsyncSession,
    dispatcher: Dispatcher,
    user: User,
    *,
    secret: SecretStr,
    valid_for: timedelta,
    reason: Literal["requested", "reminder"],
    request_id: str | None = None,
) -> VerificationEmail:
    """Issue ``user`` a fresh link (voiding the old ones) and stage the email carrying it
    in ``session``'s transaction; the caller commits, then publishes it."""
    link = await issue(session, user_id=user.id, secret=secret, valid_for=valid_for)
    message = VerificationEmail(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        verification=link,
        reason=reason,
        request_id=request_id,
    )
    await dispatcher.stage(session, message)
    return message


async def resend(
    *,
    sessions: async_sessionmaker[AsyncSession],
    dispatcher: Dispatcher,
    email: str,
    secret: SecretStr,
    valid_for: timedelta,
    request_id: str | None,
) -> bool:
    """Email a fresh verification link to ``email`` if it has an unverified account.

    Old links stop working. Returns whether an email was staged; runs after
    the response (see ``routes.verification``), so the caller never learns it.
    """
    async with sessions() as session:
        user = (
            await session.exec(select(User).where(col(User.email) == email).with_for_update())
        ).first()
        if user is None or user.email_verified_at is not None:
            log.info("verification.resend_skipped", reason="no unverified account")
            return False
        message = await stage_link_email(
            session,
            dispatcher,
            user,
            secret=secret,
            valid_for=valid_for,
            reason="requested",
            request_id=request_id,
        )
        await session.commit()
        log.info("verification.resent", user_id=str(user.id), message_id=str(message.message_id))
        await dispatcher.publish_after_commit(session, message, user_id=user.id)
        return True

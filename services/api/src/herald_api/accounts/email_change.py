"""Moving an account to another email address, confirmed from that address.

1. The account holder asks with their password (``POST /users/me/email``).
   The rest runs after the response (``request_change``), so neither the
   answer nor its timing tells whether the new address already has an
   account: a free address is sent a link (purpose ``change_email``, the
   address stored with the token, only the newest link works); a taken one
   is sent nothing.
2. Opening the link (``POST /auth/verify``, the page every address link
   opens) moves the account (``apply_change``): the new address counts as
   verified, and the previous one is told (ASVS 6.3.7). Until then the
   account keeps its address.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import structlog
from pydantic import SecretStr
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import links as link_tokens
from herald_api.auth.models import User
from herald_api.outbox.dispatch import Dispatcher
from herald_shared.messages import EmailChangedEmail, EmailChangeEmail
from herald_shared.tokens import Purpose

log = structlog.get_logger(__name__)

PURPOSE: Purpose = "change_email"


async def request_change(
    *,
    sessions: async_sessionmaker[AsyncSession],
    dispatcher: Dispatcher,
    user_id: uuid.UUID,
    new_email: str,
    secret: SecretStr,
    valid_for: timedelta,
    request_id: str | None,
) -> bool:
    """Email ``new_email`` a link that moves ``user_id``'s account there, unless an
    account (this one included) already has it. Returns whether an email was
    staged; runs after the response, so the caller never learns it."""
    async with sessions() as session:
        user = await session.get(User, user_id, with_for_update=True)
        taken = (await session.exec(select(User.id).where(col(User.email) == new_email))).first()
        if user is None or taken is not None:
            log.info("email_change.request_skipped", reason="address taken", user_id=str(user_id))
            return False
        link = await link_tokens.issue(
            session,
            user_id=user_id,
            purpose=PURPOSE,
            secret=secret,
            valid_for=valid_for,
            new_email=new_email,
        )
        message = EmailChangeEmail(
            user_id=user_id,
            email=new_email,
            display_name=user.display_name,
            confirmation=link,
            request_id=request_id,
        )
        await dispatcher.stage(session, message)
        await session.commit()
        log.info("email_change.requested", user_id=str(user_id), message_id=str(message.message_id))
        await dispatcher.publish_after_commit(session, message, user_id=user_id)
        return True


class AddressTakenError(Exception):
    """The new address was given to another account after the link was sent."""


async def apply_change(
    session: AsyncSession,
    dispatcher: Dispatcher,
    *,
    user_id: uuid.UUID,
    new_email: str,
    request_id: str | None,
) -> tuple[User, EmailChangedEmail]:
    """Move ``user_id``'s account to ``new_email``, verified (no commit), and stage
    the notice to the previous address; the caller publishes it after its commit.

    Raises ``AddressTakenError`` if another account has the address by now.
    """
    user = await session.get(User, user_id, with_for_update=True)
    assert user is not None  # its token row, which references it, was just spent
    previous = user.email
    try:
        async with session.begin_nested():
            await session.exec(
                update(User)
                .where(col(User.id) == user_id)
                .values(email=new_email, email_verified_at=func.now())
            )
    except IntegrityError:
        raise AddressTakenError from None
    await session.refresh(user)
    notice = EmailChangedEmail(
        user_id=user_id, email=previous, display_name=user.display_name, request_id=request_id
    )
    await dispatcher.stage(session, notice)
    return user, notice

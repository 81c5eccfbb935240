"""Password reset: "forgot password" emails a link, whose token sets a new password.

- A request is answered before the account is looked up (``request_reset``
  runs after the response), so neither the answer nor its timing tells
  whether the address has an account; only an address with one is emailed.
- A reset link works once, for ``HERALD_PASSWORD_RESET_LINK_MINUTES``, and
  only the newest one a user was sent. Spending it replaces the password
  (``password_change.replace_password``: earlier sessions end, the owner is
  told), voids the user's other reset links and marks the address verified
  (the link proved it is the user's), all in one transaction.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import links as link_tokens
from herald_api.accounts import verification
from herald_api.accounts.password_change import replace_password
from herald_api.auth.models import User
from herald_api.outbox.dispatch import Dispatcher
from herald_shared.messages import PasswordChangedEmail, PasswordResetEmail
from herald_shared.tokens import Purpose

log = structlog.get_logger(__name__)

PURPOSE: Purpose = "reset_password"


async def request_reset(
    *,
    sessions: async_sessionmaker[AsyncSession],
    dispatcher: Dispatcher,
    email: str,
    secret: SecretStr,
    valid_for: timedelta,
    request_id: str | None,
) -> bool:
    """Email a password reset link to ``email`` if it has an account.

    Earlier reset links stop working. Returns whether an email was staged;
    runs after the response, so the caller never learns it.
    """
    async with sessions() as session:
        user = (
            await session.exec(select(User).where(col(User.email) == email).with_for_update())
        ).first()
        if user is None:
            log.info("password_reset.request_skipped", reason="no account")
            return False
        link = await link_tokens.issue(
            session, user_id=user.id, purpose=PURPOSE, secret=secret, valid_for=valid_for
        )
        message = PasswordResetEmail(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            reset=link,
            request_id=request_id,
        )
        await dispatcher.stage(session, message)
        await session.commit()
        log.info(
            "password_reset.requested", user_id=str(user.id), message_id=str(message.message_id)
        )
        await dispatcher.publish_after_commit(session, message, user_id=user.id)
        return True


async def reset_password(
    session: AsyncSession,
    dispatcher: Dispatcher,
    *,
    token: str,
    password_hash: str,
    request_id: str | None,
) -> tuple[User, PasswordChangedEmail] | None:
    """Spend a reset ``token`` on the new ``password_hash`` (no commit; see the module doc).

    Returns the user and the staged notice for the caller to publish after
    its commit, or ``None`` when the token is unknown, spent, expired or made
    for another purpose (one answer for all).
    """
    spent = await link_tokens.spend(session, token=token, purposes=(PURPOSE,))
    if spent is None:
        return None
    user_id = spent.user_id
    await verification.mark_verified(session, user_id=user_id)
    await link_tokens.void(session, user_id=user_id, purpose=PURPOSE)
    return await replace_password(
        session, dispatcher, user_id=user_id, password_hash=password_hash, request_id=request_id
    )

"""Tokens of emailed links, bound to one user and one purpose.

A user holds at most one live token per purpose: issuing one deletes the
unspent ones, so only the newest link works. Only the token's fingerprint is
stored (``herald_shared.tokens``); the notifier derives the token itself from
the id in its queue message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import delete, func, insert, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import EmailToken
from herald_shared.messages import EmailLink
from herald_shared.tokens import Purpose, derive, fingerprint, new_token_id


async def issue(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    secret: SecretStr,
    valid_for: timedelta,
    first: bool = False,
    new_email: str | None = None,
) -> EmailLink:
    """Replace ``user_id``'s unspent ``purpose`` tokens with a new one (no commit).

    ``first``: the user was created in this transaction and has none to
    replace (one statement less on the signup path). ``new_email``: the
    address a ``change_email`` token confirms. Returns the link to email: its
    token id and expiry. The token itself is derived, fingerprinted and
    forgotten here.
    """
    if not first:
        await void(session, user_id=user_id, purpose=purpose)
    token_id = new_token_id()
    expires_at = datetime.now(UTC) + valid_for
    await session.exec(
        insert(EmailToken).values(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            fingerprint=fingerprint(derive(secret, token_id=token_id, purpose=purpose)),
            expires_at=expires_at,
            new_email=new_email,
        )
    )
    return EmailLink(token_id=token_id, expires_at=expires_at)


async def void(session: AsyncSession, *, user_id: uuid.UUID, purpose: Purpose) -> None:
    """Delete ``user_id``'s unspent ``purpose`` tokens (no commit): their links stop working."""
    await session.exec(
        delete(EmailToken).where(
            col(EmailToken.user_id) == user_id,
            col(EmailToken.purpose) == purpose,
            col(EmailToken.used_at).is_(None),
        )
    )


@dataclass(frozen=True)
class SpentToken:
    """What a spent token was for."""

    user_id: uuid.UUID
    purpose: Purpose
    new_email: str | None


async def spend(
    session: AsyncSession, *, token: str, purposes: tuple[Purpose, ...]
) -> SpentToken | None:
    """Spend ``token`` if it was made for one of ``purposes`` (no commit).

    ``None`` when the token is unknown, spent, expired or made for another
    purpose: one answer for all, so the caller cannot tell which. Two
    requests racing with one token: the row lock lets one win.
    """
    spent = await session.exec(
        update(EmailToken)
        .where(
            col(EmailToken.fingerprint) == fingerprint(token),
            col(EmailToken.purpose).in_(purposes),
            col(EmailToken.used_at).is_(None),
            col(EmailToken.expires_at) > func.now(),
        )
        .values(used_at=func.now())
        .returning(col(EmailToken.user_id), col(EmailToken.purpose), col(EmailToken.new_email))
    )
    row = spent.first()
    if row is None:
        return None
    user_id, purpose, new_email = row
    return SpentToken(user_id=user_id, purpose=purpose, new_email=new_email)

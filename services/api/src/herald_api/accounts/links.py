"""Tokens of emailed links, bound to one user and one purpose, and the policy (key and
lifetimes) they are issued under.

Issuing a token deletes the user's unspent ones of its purpose: only the newest link
works. Only the token's fingerprint is stored; the notifier derives the token itself
from the id in its queue message (``herald_shared.tokens``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import delete, func, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts.models import EmailToken
from herald_api.core.settings import Settings
from herald_shared.messages import EmailLink
from herald_shared.tokens import Purpose, derive, fingerprint, new_token_id

VERIFY_EMAIL: Purpose = "verify_email"
CHANGE_EMAIL: Purpose = "change_email"
RESET_PASSWORD: Purpose = "reset_password"  # noqa: S105  # a purpose, no password


@dataclass(frozen=True)
class LinkPolicy:
    """The key and the lifetimes of emailed links, built once from the settings."""

    secret: SecretStr
    """``HERALD_LINK_SECRET``: derives each token from its id (the notifier holds it too)."""
    address_link_valid_for: timedelta
    """Verification and email change links (``HERALD_VERIFICATION_LINK_HOURS``)."""
    reset_link_valid_for: timedelta
    """Password reset links (``HERALD_PASSWORD_RESET_LINK_MINUTES``): short-lived."""

    @classmethod
    def from_settings(cls, settings: Settings) -> LinkPolicy:
        return cls(
            secret=settings.link_secret,
            address_link_valid_for=timedelta(hours=settings.verification_link_hours),
            reset_link_valid_for=timedelta(minutes=settings.password_reset_link_minutes),
        )

    def valid_for(self, purpose: Purpose) -> timedelta:
        return (
            self.reset_link_valid_for if purpose == RESET_PASSWORD else self.address_link_valid_for
        )


async def issue(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    policy: LinkPolicy,
    first: bool = False,
    new_email: str | None = None,
) -> EmailLink:
    """Replace ``user_id``'s unspent ``purpose`` tokens with a new one, in ``session``'s
    transaction.

    ``first``: the user was created in this transaction and has none to
    replace (one statement less on the signup path). ``new_email``: the
    address a ``change_email`` token confirms. Returns the link to email: its
    token id and expiry. The token itself is derived, fingerprinted and
    forgotten here.
    """
    if not first:
        await void(session, user_id=user_id, purpose=purpose)
    token_id = new_token_id()
    expires_at = datetime.now(UTC) + policy.valid_for(purpose)
    await session.exec(
        insert(EmailToken).values(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            fingerprint=fingerprint(derive(policy.secret, token_id=token_id, purpose=purpose)),
            expires_at=expires_at,
            new_email=new_email,
        )
    )
    return EmailLink(token_id=token_id, expires_at=expires_at)


async def void(session: AsyncSession, *, user_id: uuid.UUID, purpose: Purpose) -> None:
    """Delete ``user_id``'s unspent ``purpose`` tokens: their links stop working."""
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
    """Spend ``token`` if it was made for one of ``purposes``.

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


@dataclass(frozen=True)
class KnownToken:
    """A token that was issued and is still stored (spent, expired or not)."""

    user_id: uuid.UUID
    purpose: str
    new_email: str | None
    spent: bool


async def look_up(
    session: AsyncSession, *, token: str, purposes: tuple[Purpose, ...]
) -> KnownToken | None:
    """The stored row of ``token`` if it was made for one of ``purposes``, whatever its
    state; ``None`` for an unknown one (or one replaced by a newer link: deleted)."""
    found = await session.exec(
        select(
            col(EmailToken.user_id),
            col(EmailToken.purpose),
            col(EmailToken.new_email),
            col(EmailToken.used_at),
        ).where(
            col(EmailToken.fingerprint) == fingerprint(token),
            col(EmailToken.purpose).in_(purposes),
        )
    )
    row = found.first()
    if row is None:
        return None
    user_id, purpose, new_email, used_at = row
    return KnownToken(
        user_id=user_id, purpose=purpose, new_email=new_email, spent=used_at is not None
    )

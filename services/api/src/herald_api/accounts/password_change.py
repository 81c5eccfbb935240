"""Changing a password: by the account holder (knowing the current one), or by
a reset link (``password_reset``).

Either way the new hash is stored with the user's token version raised, so
every access token issued before is refused from then on (ASVS 7.4.3), any
pending email change link stops working (it was asked for with the old
password), and a "your password was changed" email is staged in the same
transaction (ASVS 6.3.7): a change the owner did not make does not go
unnoticed.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import links as link_tokens
from herald_api.auth.models import User
from herald_api.auth.passwords import PasswordHasher
from herald_api.outbox.dispatch import Dispatcher
from herald_shared.messages import PasswordChangedEmail

log = structlog.get_logger(__name__)


class WrongPasswordError(Exception):
    """The password given is not the account's (or it changed meanwhile)."""


async def replace_password(
    session: AsyncSession,
    dispatcher: Dispatcher,
    *,
    user_id: uuid.UUID,
    password_hash: str,
    request_id: str | None,
    old_hash: str | None = None,
) -> tuple[User, PasswordChangedEmail] | None:
    """Store ``password_hash`` as ``user_id``'s password (no commit; see the module doc).

    ``old_hash``: change only if the stored hash is still that one (a change
    committed meanwhile wins); ``None`` when it does not matter. Returns the
    user and the staged notice for the caller to publish after its commit, or
    ``None`` when nothing was changed.
    """
    condition = col(User.id) == user_id
    if old_hash is not None:
        condition &= col(User.password_hash) == old_hash
    changed = await session.exec(
        update(User)
        .where(condition)
        .values(password_hash=password_hash, token_version=col(User.token_version) + 1)
    )
    if changed.rowcount != 1:
        return None
    # A pending move to another address was asked for with the old password:
    # whoever knew it must not be able to finish it now.
    await link_tokens.void(session, user_id=user_id, purpose="change_email")
    user = await session.get(User, user_id, populate_existing=True)
    assert user is not None  # just updated, in this transaction
    notice = PasswordChangedEmail(
        user_id=user.id, email=user.email, display_name=user.display_name, request_id=request_id
    )
    await dispatcher.stage(session, notice)
    return user, notice


async def confirm_password(
    session: AsyncSession, hasher: PasswordHasher, *, user: User, password: str
) -> tuple[uuid.UUID, str]:
    """Check ``password`` against ``user``'s; their id and the hash it matched.

    Ends ``session``'s transaction first, so no connection is held through the
    hashing (~25 ms); that expires ``user``, so callers use the values returned.
    Raises ``WrongPasswordError`` when the password is another one.
    """
    user_id, password_hash = user.id, user.password_hash
    await session.rollback()
    if not await hasher.verify(password_hash, password):
        log.info("password.confirmation_failed", user_id=str(user_id))
        raise WrongPasswordError
    return user_id, password_hash


async def change_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    dispatcher: Dispatcher,
    *,
    user: User,
    current_password: str,
    new_password: str,
    request_id: str | None,
) -> User:
    """Replace ``user``'s password after checking ``current_password``; commits, and
    publishes the notice.

    Raises ``WrongPasswordError`` when ``current_password`` is not the
    account's (or the password changed meanwhile). Returns the user as changed
    (its new token version).
    """
    user_id, old_hash = await confirm_password(
        session, hasher, user=user, password=current_password
    )
    new_hash = await hasher.hash(new_password)
    changed = await replace_password(
        session,
        dispatcher,
        user_id=user_id,
        password_hash=new_hash,
        request_id=request_id,
        old_hash=old_hash,
    )
    if changed is None:
        await session.rollback()
        log.info("password.change_refused", reason="changed_meanwhile", user_id=str(user_id))
        raise WrongPasswordError
    changed_user, notice = changed
    await session.commit()
    log.info("password.changed", user_id=str(user_id))
    await dispatcher.publish_after_commit(session, notice, user_id=user_id)
    return changed_user

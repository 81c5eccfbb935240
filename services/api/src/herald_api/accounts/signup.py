"""Registering a user: the account, and the email it causes.

A signup never tells the caller whether the address already had an account
(ASVS 6.3.8): both outcomes hash the password, write one transaction with an
outbox message and push it, and answer the same. A new address gets the
account and a welcome email with a verification link; a taken one gets no
change and its owner an "someone tried to sign up with your address" email.
"""

from __future__ import annotations

import enum
import uuid
from datetime import timedelta

import structlog
from pydantic import SecretStr
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import verification
from herald_api.auth.models import User, UserCreate
from herald_api.auth.passwords import PasswordHasher
from herald_api.core.metrics import SIGNUPS
from herald_api.outbox.dispatch import Dispatcher
from herald_shared.messages import AccountEmail, AccountExistsEmail, WelcomeEmail

log = structlog.get_logger(__name__)


class Outcome(enum.Enum):
    CREATED = "created"
    ADDRESS_TAKEN = "address_taken"
    """The address had an account already; its owner is told instead."""


async def sign_up(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    dispatcher: Dispatcher,
    data: UserCreate,
    link_secret: SecretStr,
    link_valid_for: timedelta,
    request_id: str | None,
) -> Outcome:
    """Create the user and stage its welcome email in one transaction, then push the email.

    Both rows commit together or not at all, so no crash can leave a user
    without its welcome email or an email without its user. For a taken
    address the transaction stages the account-exists email instead.
    """
    # Hash before touching the database, for new and taken addresses alike:
    # the same cost either way, and no transaction held open during the hash.
    password_hash = await hasher.hash(data.password.get_secret_value())
    user_id = uuid.uuid4()
    created = await session.exec(
        insert(User)
        .values(
            id=user_id,
            email=data.email,
            display_name=data.display_name,
            password_hash=password_hash,
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(col(User.id))
    )
    message: AccountEmail
    if created.scalar_one_or_none() is not None:
        link = await verification.issue(
            session, user_id=user_id, secret=link_secret, valid_for=link_valid_for, first=True
        )
        message = WelcomeEmail(
            user_id=user_id,
            email=data.email,
            display_name=data.display_name,
            verification=link,
            request_id=request_id,
        )
        outcome = Outcome.CREATED
    else:
        owner = (await session.exec(select(User).where(col(User.email) == data.email))).first()
        if owner is None:
            # Deleted between the insert and this read (a purge): nobody to tell.
            await session.rollback()
            log.info("signup.address_vanished")
            return Outcome.ADDRESS_TAKEN
        user_id = owner.id
        message = AccountExistsEmail(
            user_id=owner.id,
            email=owner.email,
            display_name=owner.display_name,
            request_id=request_id,
        )
        outcome = Outcome.ADDRESS_TAKEN
    await dispatcher.stage(session, message)
    await session.commit()
    SIGNUPS.labels(outcome.value).inc()
    log.info(
        "user.created" if outcome is Outcome.CREATED else "signup.address_taken",
        user_id=str(user_id),
        message_id=str(message.message_id),
    )
    dispatcher.faults.reach(
        "after_commit", user_id=str(user_id), message_id=str(message.message_id)
    )
    await dispatcher.publish_after_commit(session, message, user_id=user_id)
    return outcome

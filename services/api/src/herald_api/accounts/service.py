"""The account use cases. Each method is one unit of work: it opens its transaction,
stages the outbox messages the change causes, commits, and then publishes them (the
outbox fast path). Routes only adapt HTTP to these; docs/api.md says why each works so.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple

import structlog
from prometheus_client import Counter
from sqlalchemy import delete, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.accounts import links
from herald_api.accounts.idempotency import Claim
from herald_api.accounts.links import CHANGE_EMAIL, RESET_PASSWORD, VERIFY_EMAIL, LinkPolicy
from herald_api.accounts.schemas import UserCreate
from herald_api.auth.models import User
from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.sessions import (
    EndReason,
    SessionService,
    TokenPair,
    end_sessions,
    open_session,
)
from herald_api.auth.tokens import AccessTokens
from herald_api.outbox import Dispatcher, OutboxMessage
from herald_shared.locales import DEFAULT_LOCALE
from herald_shared.messages import (
    AccountEmail,
    AccountExistsEmail,
    EmailChangedEmail,
    EmailChangeEmail,
    PasswordChangedEmail,
    PasswordResetEmail,
    VerificationEmail,
    WelcomeEmail,
)

log = structlog.get_logger(__name__)

SIGNUPS = Counter(
    "herald_api_signups_total",
    "Signups committed, by outcome: created (a new account) or address_taken (the owner "
    "was emailed instead).",
    ["outcome"],
)


class WrongPasswordError(Exception):
    """The password given is not the account's (or it changed meanwhile)."""


class LinkInvalidError(Exception):
    """A link's token is unknown, spent, expired or made for another purpose (one error
    for all, so the caller cannot tell which)."""


class AddressTakenError(Exception):
    """The new address was given to another account after the email change link was sent."""


class SignupOutcome(enum.Enum):
    CREATED = "created"
    ADDRESS_TAKEN = "address_taken"
    """The address had an account already; its owner is told instead."""


@dataclass(frozen=True)
class Verified:
    """A spent address link: the user as it is now."""

    user: User
    email_changed: bool
    """An email change link: the account moved to the address it confirmed."""


@dataclass(frozen=True)
class AlreadyVerified:
    """A genuine address link used again or expired, whose work is done: a verification
    link of a verified user, or a spent email change link whose account has that
    address now. ``email_change``: which of the two."""

    email_change: bool


@dataclass(frozen=True)
class ConfirmedPassword:
    """A password checked against the account's: whose, and the hash it matched."""

    user_id: uuid.UUID
    password_hash: str


@dataclass(frozen=True)
class PasswordChanged:
    """The user as changed (its new token version) and the tokens of the new session
    of the device that changed it."""

    user: User
    tokens: TokenPair


class _Staged(NamedTuple):
    """A change made in an open transaction: the user as changed, and the notice staged."""

    user: User
    notice: AccountEmail


@dataclass(frozen=True)
class AccountService:
    """The account use cases on the API's database, queue, hasher and policies."""

    sessions: async_sessionmaker[AsyncSession]
    dispatcher: Dispatcher
    hasher: PasswordHasher
    tokens: AccessTokens
    links: LinkPolicy
    login_sessions: SessionService
    request_id: str | None = None
    """The request the messages staged are caused by (``for_request``)."""

    def for_request(self, request_id: str | None) -> AccountService:
        """This service, stamping its messages with ``request_id``."""
        return replace(self, request_id=request_id)

    async def sign_up(
        self, data: UserCreate, *, locale: str = DEFAULT_LOCALE, idempotency: Claim | None = None
    ) -> SignupOutcome:
        """Create the user, speaking ``locale``, and stage its welcome email in one
        transaction, then push it.

        A taken address gets no change and its owner an account-exists email instead;
        both outcomes cost the same and answer the same (docs/api.md). With
        ``idempotency``, its key is recorded first in that transaction (a duplicate
        raises ``AlreadyAnsweredError``, see ``Claim.record``).
        """
        # Hash before touching the database, for new and taken addresses alike:
        # the same cost either way, and no transaction held open during the hash.
        password_hash = await self.hasher.hash(data.password.get_secret_value())
        user_id = uuid.uuid4()
        async with self.sessions() as session:
            if idempotency is not None:
                # First: a duplicate in flight waits here, then takes the first answer.
                await idempotency.record(session, user_id=user_id)
            created = await session.exec(
                insert(User)
                .values(
                    id=user_id,
                    email=data.email,
                    display_name=data.display_name,
                    password_hash=password_hash,
                    locale=locale,
                )
                .on_conflict_do_nothing(index_elements=["email"])
                .returning(col(User.id))
            )
            message: AccountEmail
            if created.scalar_one_or_none() is not None:
                link = await links.issue(
                    session, user_id=user_id, purpose=VERIFY_EMAIL, policy=self.links, first=True
                )
                message = WelcomeEmail(
                    user_id=user_id,
                    email=data.email,
                    display_name=data.display_name,
                    verification=link,
                    request_id=self.request_id,
                    locale=locale,
                )
                outcome = SignupOutcome.CREATED
            else:
                owner = (
                    await session.exec(select(User).where(col(User.email) == data.email))
                ).first()
                if owner is None:
                    # Deleted between the insert and this read (a purge): nobody to tell.
                    log.info("signup.address_vanished")
                    return SignupOutcome.ADDRESS_TAKEN
                if idempotency is not None:
                    await idempotency.link(session, user_id=owner.id)
                user_id = owner.id
                message = AccountExistsEmail(
                    user_id=owner.id,
                    email=owner.email,
                    display_name=owner.display_name,
                    request_id=self.request_id,
                    locale=owner.locale,
                )
                outcome = SignupOutcome.ADDRESS_TAKEN
            await self.dispatcher.stage(session, message)
            await session.commit()
            SIGNUPS.labels(outcome.value).inc()
            log.info(
                "user.created" if outcome is SignupOutcome.CREATED else "signup.address_taken",
                user_id=str(user_id),
                message_id=str(message.message_id),
            )
            await self.dispatcher.publish_after_commit(session, message, user_id=user_id)
        return outcome

    async def verify_address(self, token: str) -> Verified | AlreadyVerified:
        """Spend an address link's ``token``: a verification link's marks its user
        verified; an email change link's moves the account to the address it confirms
        and tells the previous address.

        A link that cannot be spent but whose work is done answers ``AlreadyVerified``
        (``_already_verified``). Raises ``LinkInvalidError``, or ``AddressTakenError``
        when another account has the new address by now.
        """
        async with self.sessions() as session:
            spent = await links.spend(session, token=token, purposes=(VERIFY_EMAIL, CHANGE_EMAIL))
            if spent is None:
                done = await _already_verified(session, token=token)
                if done is None:
                    raise LinkInvalidError
                log.info("verification.already_done", email_change=done.email_change)
                return done
            notice: AccountEmail | None = None
            if spent.purpose == CHANGE_EMAIL:
                assert spent.new_email is not None  # issued with one
                user, notice = await self._move_address(
                    session, user_id=spent.user_id, new_email=spent.new_email
                )
            else:
                await _mark_verified(session, user_id=spent.user_id)
                found = await session.get(User, spent.user_id, populate_existing=True)
                assert found is not None  # its token row, which references it, was just spent
                user = found
            await session.commit()
            if notice is None:
                log.info("user.verified", user_id=str(user.id))
            else:
                log.info("user.email_changed", user_id=str(user.id))
                await self.dispatcher.publish_after_commit(session, notice, user_id=user.id)
        return Verified(user=user, email_changed=notice is not None)

    async def update_profile(
        self, user: User, *, display_name: str | None = None, locale: str | None = None
    ) -> User:
        """Change ``user``'s display name and/or locale (``None``: left as it is); the
        user as stored now. Messages staged from then on carry the new values."""
        values: dict[str, str] = {}
        if display_name is not None:
            values["display_name"] = display_name
        if locale is not None:
            values["locale"] = locale
        async with self.sessions() as session:
            if values:
                await session.exec(update(User).where(col(User.id) == user.id).values(**values))
            found = await session.get(User, user.id, populate_existing=True)
            await session.commit()
        if found is None:  # deleted since its access token was checked
            raise LookupError("the account no longer exists")
        log.info("user.profile_changed", user_id=str(user.id), fields=sorted(values))
        return found

    async def resend_verification(self, email: str, idempotency: Claim | None = None) -> bool:
        """Email a fresh verification link to ``email`` if it has an unverified account
        (old links stop working); whether one was sent. Runs after the response.
        ``idempotency``: nothing is done if another request holds its key."""
        async with self.sessions() as session:
            user = (
                await session.exec(select(User).where(col(User.email) == email).with_for_update())
            ).first()
            if idempotency is not None and not await idempotency.claim(
                session, user_id=None if user is None else user.id
            ):
                return False
            if user is None or user.email_verified_at is not None:
                log.info("verification.resend_skipped", reason="no unverified account")
                await session.commit()  # the key, if any: its retries send nothing either
                return False
            message = await stage_verification_email(
                session,
                self.dispatcher,
                user,
                policy=self.links,
                reason="requested",
                request_id=self.request_id,
            )
            await session.commit()
            log.info(
                "verification.resent", user_id=str(user.id), message_id=str(message.message_id)
            )
            await self.dispatcher.publish_after_commit(session, message, user_id=user.id)
            return True

    async def request_password_reset(self, email: str, idempotency: Claim | None = None) -> bool:
        """Email a password reset link to ``email`` if it has an account (earlier reset
        links stop working); whether one was sent. Runs after the response.
        ``idempotency``: nothing is done if another request holds its key."""
        async with self.sessions() as session:
            user = (
                await session.exec(select(User).where(col(User.email) == email).with_for_update())
            ).first()
            if idempotency is not None and not await idempotency.claim(
                session, user_id=None if user is None else user.id
            ):
                return False
            if user is None:
                log.info("password_reset.request_skipped", reason="no account")
                await session.commit()  # the key, if any: its retries send nothing either
                return False
            link = await links.issue(
                session, user_id=user.id, purpose=RESET_PASSWORD, policy=self.links
            )
            message = PasswordResetEmail(
                user_id=user.id,
                email=user.email,
                display_name=user.display_name,
                reset=link,
                request_id=self.request_id,
                locale=user.locale,
            )
            await self._commit_and_publish(
                session, message, event="password_reset.requested", user_id=user.id
            )
            return True

    async def reset_password(self, *, token: str, password: str) -> User:
        """Spend a reset link's ``token`` on ``password``: the password is replaced (see
        ``_replace_password``), the user's other reset links void and its address counts
        as verified (the link proved it). Raises ``LinkInvalidError``."""
        password_hash = await self.hasher.hash(password)
        async with self.sessions() as session:
            spent = await links.spend(session, token=token, purposes=(RESET_PASSWORD,))
            if spent is None:
                raise LinkInvalidError
            await _mark_verified(session, user_id=spent.user_id)
            await links.void(session, user_id=spent.user_id, purpose=RESET_PASSWORD)
            changed = await self._replace_password(
                session, user_id=spent.user_id, password_hash=password_hash, ends="password_reset"
            )
            if changed is None:
                raise LinkInvalidError
            user, notice = changed
            await session.commit()
            log.info("password.reset", user_id=str(user.id))
            await self.dispatcher.publish_after_commit(session, notice, user_id=user.id)
        return user

    async def confirm_password(self, user: User, password: str) -> ConfirmedPassword:
        """Check ``password`` against ``user``'s (no connection is held while hashing);
        raises ``WrongPasswordError`` when it is another one."""
        user_id, password_hash = user.id, user.password_hash
        if not await self.hasher.verify(password_hash, password):
            log.info("password.confirmation_failed", user_id=str(user_id))
            raise WrongPasswordError
        return ConfirmedPassword(user_id=user_id, password_hash=password_hash)

    async def change_password(
        self,
        user: User,
        *,
        current_password: str,
        new_password: str,
        user_agent: str | None,
        client: str,
    ) -> PasswordChanged:
        """Replace ``user``'s password after checking ``current_password``: every
        session ends and every earlier access token stops working, and the device
        that changed it gets a new session (``user_agent``, ``client``), in the same
        transaction.

        Raises ``WrongPasswordError`` when ``current_password`` is not the account's
        (or the password changed meanwhile).
        """
        confirmed = await self.confirm_password(user, current_password)
        new_hash = await self.hasher.hash(new_password)
        async with self.sessions() as session:
            changed = await self._replace_password(
                session,
                user_id=confirmed.user_id,
                password_hash=new_hash,
                ends="password_changed",
                old_hash=confirmed.password_hash,
            )
            if changed is None:
                log.info(
                    "password.change_refused",
                    reason="changed_meanwhile",
                    user_id=str(confirmed.user_id),
                )
                raise WrongPasswordError
            changed_user, notice = changed
            opened = open_session(
                session,
                user_id=changed_user.id,
                user_agent=user_agent,
                client=client,
                policy=self.login_sessions.policy,
            )
            version = changed_user.token_version
            await session.commit()
            log.info("password.changed", user_id=str(confirmed.user_id))
            await self.dispatcher.publish_after_commit(session, notice, user_id=confirmed.user_id)
        tokens = self.login_sessions.first_pair(opened, version=version)
        return PasswordChanged(user=changed_user, tokens=tokens)

    async def request_email_change(
        self, *, user_id: uuid.UUID, new_email: str, idempotency: Claim | None = None
    ) -> bool:
        """Email ``new_email`` a link that moves ``user_id``'s account there, unless an
        account (this one included) already has it; whether one was sent. Runs after
        the response, so the caller never learns it. ``idempotency``: nothing is done
        if another request holds its key."""
        async with self.sessions() as session:
            user = await session.get(User, user_id, with_for_update=True)
            if idempotency is not None and not await idempotency.claim(
                session, user_id=None if user is None else user.id
            ):
                return False
            taken = (
                await session.exec(select(User.id).where(col(User.email) == new_email))
            ).first()
            if user is None or taken is not None:
                log.info(
                    "email_change.request_skipped", reason="address taken", user_id=str(user_id)
                )
                await session.commit()  # the key, if any: its retries send nothing either
                return False
            link = await links.issue(
                session,
                user_id=user_id,
                purpose=CHANGE_EMAIL,
                policy=self.links,
                new_email=new_email,
            )
            message = EmailChangeEmail(
                user_id=user_id,
                email=new_email,
                display_name=user.display_name,
                confirmation=link,
                request_id=self.request_id,
                locale=user.locale,
            )
            await self._commit_and_publish(
                session, message, event="email_change.requested", user_id=user_id
            )
            return True

    async def delete_account(self, user: User, *, password: str) -> None:
        """Delete ``user``'s account, its link tokens and its outbox messages once
        ``password`` is confirmed, then what Redis holds of it (``Dispatcher.forget``).
        Raises ``WrongPasswordError`` when it is another one (or it changed meanwhile:
        the account is then left as it is)."""
        confirmed = await self.confirm_password(user, password)
        user_id = confirmed.user_id
        async with self.sessions() as session:
            deleted = await session.exec(
                delete(User).where(
                    col(User.id) == user_id, col(User.password_hash) == confirmed.password_hash
                )
            )
            if deleted.rowcount != 1:
                raise WrongPasswordError
            dropped = await session.exec(
                delete(OutboxMessage)
                .where(col(OutboxMessage.user_id) == user_id)
                .returning(col(OutboxMessage.message_id))
            )
            message_ids = list(dropped.scalars())
            await session.commit()
        forgotten = await self.dispatcher.forget(user_id=user_id, message_ids=message_ids)
        log.info(
            "user.deleted",
            user_id=str(user_id),
            outbox_messages_deleted=len(message_ids),
            **(asdict(forgotten) if forgotten is not None else {}),
        )

    async def _commit_and_publish(
        self, session: AsyncSession, message: AccountEmail, *, event: str, user_id: uuid.UUID
    ) -> None:
        """Stage ``message`` in the open transaction, commit, log ``event``, then publish
        it (the outbox's fast path): the end of a unit of work that emails one link."""
        await self.dispatcher.stage(session, message)
        await session.commit()
        log.info(event, user_id=str(user_id), message_id=str(message.message_id))
        await self.dispatcher.publish_after_commit(session, message, user_id=user_id)

    async def _replace_password(
        self,
        session: AsyncSession,
        *,
        user_id: uuid.UUID,
        password_hash: str,
        ends: EndReason,
        old_hash: str | None = None,
    ) -> _Staged | None:
        """Store ``password_hash`` with the token version raised, end every session
        (their refresh tokens; ``ends`` says why), void a pending email change, and
        stage the "password changed" notice; ``None`` when nothing changed.

        ``old_hash``: change only if the stored hash is still that one (a change
        committed meanwhile wins).
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
        await links.void(session, user_id=user_id, purpose=CHANGE_EMAIL)
        await end_sessions(session, user_id=user_id, reason=ends)
        user = await session.get(User, user_id, populate_existing=True)
        assert user is not None  # just updated, in this transaction
        notice = PasswordChangedEmail(
            user_id=user.id,
            email=user.email,
            display_name=user.display_name,
            request_id=self.request_id,
            locale=user.locale,
        )
        await self.dispatcher.stage(session, notice)
        return _Staged(user, notice)

    async def _move_address(
        self, session: AsyncSession, *, user_id: uuid.UUID, new_email: str
    ) -> _Staged:
        """Move ``user_id``'s account to ``new_email``, verified, and stage the notice to
        the previous address. Raises ``AddressTakenError``."""
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
            user_id=user_id,
            email=previous,
            display_name=user.display_name,
            request_id=self.request_id,
            locale=user.locale,
        )
        await self.dispatcher.stage(session, notice)
        return _Staged(user, notice)


async def _already_verified(session: AsyncSession, *, token: str) -> AlreadyVerified | None:
    """``AlreadyVerified`` if ``token`` is a stored address link whose work is done,
    judged only from its own row and its own user: a verification token (spent or
    expired) of a verified user, or a spent email change token whose user has the
    address it confirms. ``None`` otherwise (the caller's one 400)."""
    known = await links.look_up(session, token=token, purposes=(VERIFY_EMAIL, CHANGE_EMAIL))
    if known is None:
        return None
    user = await session.get(User, known.user_id)
    if user is None:
        return None
    if known.purpose == VERIFY_EMAIL:
        done = user.email_verified_at is not None
    else:
        done = known.spent and user.email == known.new_email
    return AlreadyVerified(email_change=known.purpose == CHANGE_EMAIL) if done else None


async def _mark_verified(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """Mark ``user_id``'s address verified, unless it already is."""
    await session.exec(
        update(User)
        .where(col(User.id) == user_id, col(User.email_verified_at).is_(None))
        .values(email_verified_at=func.now())
    )


async def stage_verification_email(
    session: AsyncSession,
    dispatcher: Dispatcher,
    user: User,
    *,
    policy: LinkPolicy,
    reason: Literal["requested", "reminder"],
    request_id: str | None = None,
) -> VerificationEmail:
    """Issue ``user`` a fresh verification link (voiding the old ones) and stage the
    email carrying it in ``session``'s transaction; its caller commits and publishes."""
    link = await links.issue(session, user_id=user.id, purpose=VERIFY_EMAIL, policy=policy)
    message = VerificationEmail(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        verification=link,
        reason=reason,
        request_id=request_id,
        locale=user.locale,
    )
    await dispatcher.stage(session, message)
    return message

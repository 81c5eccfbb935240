"""Logging in: checking an email and password, and upgrading the stored hash on the way."""

from __future__ import annotations

import uuid
from contextlib import suppress

import structlog
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import User
from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.sessions import SessionService, TokenPair
from herald_api.auth.tokens import AccessClaims
from herald_api.core.admission import OverloadedError
from herald_api.core.db import DATABASE_ERRORS

log = structlog.get_logger(__name__)


class InvalidCredentialsError(Exception):
    """No account has this email, or its password is another one (deliberately one error)."""


class EmailNotVerifiedError(Exception):
    """The password is right, but the account's email address was never verified."""


class LoginService:
    """Checks credentials and starts sessions; owns each login's transaction."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        hasher: PasswordHasher,
        login_sessions: SessionService,
    ) -> None:
        self.sessions = sessions
        self.hasher = hasher
        self.login_sessions = login_sessions

    async def log_in(
        self, *, email: str | None, password: str, user_agent: str | None, client: str
    ) -> TokenPair:
        """A new session, and its tokens, of the user ``email`` and ``password`` belong to.

        ``email`` is the normalised address, or None for a username that is no
        address at all (it has no account). Raises ``InvalidCredentialsError``
        alike for an unknown address and a wrong password, after the same argon2id
        work; ``EmailNotVerifiedError`` only once the password was right. A right
        password whose hash is weaker than the current parameters is rehashed.
        """
        async with self.sessions() as session:
            claims = await self._check(session, email=email, password=password)
        return await self.login_sessions.start(
            user_id=claims.user_id, version=claims.version, user_agent=user_agent, client=client
        )

    async def _check(
        self, session: AsyncSession, *, email: str | None, password: str
    ) -> AccessClaims:
        hasher = self.hasher
        row = None
        if email is not None:
            query = select(
                User.id, User.password_hash, User.email_verified_at, User.token_version
            ).where(User.email == email)
            row = (await session.exec(query)).first()
        # End the read-only transaction: the pooled connection is not held
        # through ~20-50 ms of hashing.
        await session.rollback()
        if row is None:
            await hasher.verify_dummy(password)
            log.info("login.failed", reason="unknown_email")
            raise InvalidCredentialsError
        user_id, password_hash, email_verified_at, token_version = row
        if not await hasher.verify(password_hash, password):
            log.info("login.failed", reason="wrong_password", user_id=str(user_id))
            raise InvalidCredentialsError
        if hasher.needs_rehash(password_hash):
            await _rehash(
                session=session,
                hasher=hasher,
                user_id=user_id,
                old_hash=password_hash,
                password=password,
            )
        if email_verified_at is None:
            log.info("login.refused", reason="email_unverified", user_id=str(user_id))
            raise EmailNotVerifiedError
        log.info("login.succeeded", user_id=str(user_id))
        return AccessClaims(user_id=user_id, version=token_version)


async def _rehash(
    *,
    session: AsyncSession,
    hasher: PasswordHasher,
    user_id: uuid.UUID,
    old_hash: str,
    password: str,
) -> None:
    """Store a hash of ``password`` with today's parameters, unless it changed meanwhile.

    Best effort: the login goes on if this fails, and the next one tries again; with
    the hash queue full it is not even tried (the login's own hash was admitted).
    """
    try:
        new_hash = await hasher.hash(password)
    except OverloadedError:
        log.info("login.rehash_deferred", user_id=str(user_id))
        return
    # Only over the hash just verified: a password change committed meanwhile wins.
    statement = (
        update(User)
        .where(col(User.id) == user_id, col(User.password_hash) == old_hash)
        .values(password_hash=new_hash)
    )
    try:
        result = await session.exec(statement)
        await session.commit()
    except DATABASE_ERRORS as exc:
        # The type only: SQLAlchemy's message would quote the statement's
        # parameters, the hashes among them.
        log.warning("login.rehash_failed", user_id=str(user_id), error=type(exc).__name__)
        with suppress(*DATABASE_ERRORS):
            await session.rollback()
        return
    log.info("login.rehashed", user_id=str(user_id), updated=result.rowcount == 1)

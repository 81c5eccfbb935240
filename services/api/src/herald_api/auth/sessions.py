"""Sessions: refresh tokens with rotation and reuse detection, logout, and ending sessions.

A login starts a session (a ``LoginSession`` row) and hands out its refresh token:
``secrets.token_urlsafe(32)`` (256 bits from the OS CSPRNG), stored only as its
SHA-256. Each refresh replaces it (rotation) under a row lock; the replaced token
is kept, as a hash, for ``HERALD_REFRESH_GRACE_SECONDS``:

- presented within that window (two refreshes of one client at once), it is
  accepted again and gets a fresh pair; the pair the first refresh got is then
  replaced too (a client keeps the pair of its last answer);
- presented later, it was stolen or replayed (RFC 9700 §4.14): the whole session
  ends, ``session.reuse_detected`` is logged, and the owner is emailed (a
  ``SessionReuseEmail`` staged in the outbox in the same transaction).

Each rotation retires the token replaced before (``RetiredRefreshToken``), so any
earlier token of the family, however old, is a reuse too.

Every other failure (unknown, ended or expired token) is one ``InvalidRefreshTokenError``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NoReturn

import structlog
from sqlalchemy import ColumnElement, and_, func, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import LoginSession, RetiredRefreshToken, User
from herald_api.auth.ratelimit import client_network
from herald_api.auth.tokens import AccessClaims, AccessTokens, IssuedToken
from herald_api.core.settings import Settings
from herald_api.outbox import Dispatcher
from herald_shared.messages import SessionReuseEmail
from herald_shared.text import as_printable

log = structlog.get_logger(__name__)

REFRESH_TOKEN_BYTES = 32
"""256 bits of the OS CSPRNG per refresh token."""

EndReason = Literal[
    "logout", "ended", "ended_by_other", "reuse", "password_changed", "password_reset"
]


class InvalidRefreshTokenError(Exception):
    """Unknown, replaced, ended or expired: one error for every refused refresh token."""


@dataclass(frozen=True)
class TokenPair:
    """What a login or a refresh answers with."""

    access: IssuedToken
    refresh_token: str
    session_id: uuid.UUID
    session_ends_at: datetime
    """The session's absolute end (``HERALD_SESSION_MAX_DAYS`` after its login)."""


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live, and the grace window of a replaced refresh token."""

    idle: timedelta
    max_age: timedelta
    grace: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        """``HERALD_SESSION_IDLE_DAYS``, ``HERALD_SESSION_MAX_DAYS`` and
        ``HERALD_REFRESH_GRACE_SECONDS``."""
        return cls(
            idle=timedelta(days=settings.session_idle_days),
            max_age=timedelta(days=settings.session_max_days),
            grace=timedelta(seconds=settings.refresh_grace_seconds),
        )


def token_digest(token: str) -> str:
    """The SHA-256 (hex) a refresh token is stored and looked up as."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def live(policy: SessionPolicy, *, now: datetime) -> ColumnElement[bool]:
    """The condition of a session still in force at ``now``."""
    return and_(
        col(LoginSession.revoked_at).is_(None),
        col(LoginSession.expires_at) > now,
        col(LoginSession.last_used_at) > now - policy.idle,
    )


def is_live(row: LoginSession, policy: SessionPolicy, *, now: datetime) -> bool:
    """``live`` for a row already loaded."""
    return row.revoked_at is None and row.expires_at > now and row.last_used_at > now - policy.idle


class SessionService:
    """Starts, refreshes, lists and ends sessions; owns each one's transaction."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        tokens: AccessTokens,
        policy: SessionPolicy,
        dispatcher: Dispatcher,
    ) -> None:
        self.sessions = sessions
        self.tokens = tokens
        self.policy = policy
        self.dispatcher = dispatcher

    async def start(
        self, *, user_id: uuid.UUID, version: int, user_agent: str | None, client: str
    ) -> TokenPair:
        """A new session of ``user_id`` (at login), with its first pair of tokens."""
        async with self.sessions() as session:
            opened = open_session(
                session, user_id=user_id, user_agent=user_agent, client=client, policy=self.policy
            )
            await session.commit()
        return self.first_pair(opened, version=version)

    def first_pair(self, opened: OpenedSession, *, version: int) -> TokenPair:
        """The tokens of a session ``open_session`` started (and its caller committed)."""
        log.info("session.started", user_id=str(opened.user_id), session_id=str(opened.id))
        claims = AccessClaims(user_id=opened.user_id, version=version, session_id=opened.id)
        return TokenPair(
            access=self.tokens.issue(claims),
            refresh_token=opened.refresh_token,
            session_id=opened.id,
            session_ends_at=opened.expires_at,
        )

    async def refresh(self, *, refresh_token: str, request_id: str | None = None) -> TokenPair:
        """Exchange ``refresh_token`` for a new pair (rotation); see the module's rules.

        The new access token carries the user's current token version, read in the
        same transaction. Raises ``InvalidRefreshTokenError``. ``request_id``: the
        request a reuse email is caused by.
        """
        digest = token_digest(refresh_token)
        async with self.sessions() as session:
            query = (
                select(LoginSession)
                .where(
                    or_(
                        col(LoginSession.token_hash) == digest,
                        col(LoginSession.previous_token_hash) == digest,
                    )
                )
                .with_for_update()
            )
            row = (await session.exec(query)).first()
            if row is None:
                await self._refuse_unknown_or_retired(session, digest, request_id=request_id)
            # Read after the lock: a refresh that held it first rotated before this "now".
            now = datetime.now(UTC)
            ids = {"user_id": str(row.user_id), "session_id": str(row.id)}
            if not is_live(row, self.policy, now=now):
                log.info("session.refresh_refused", reason="ended_or_expired", **ids)
                raise InvalidRefreshTokenError
            current = hmac.compare_digest(row.token_hash, digest)
            if not current:
                rotated_at = row.rotated_at
                if rotated_at is None or now - rotated_at >= self.policy.grace:
                    await self._end_reused(session, row, now=now, request_id=request_id)
                    raise InvalidRefreshTokenError
                log.info("session.refresh_in_grace", **ids)
            new_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
            if current:
                if row.previous_token_hash is not None:
                    session.add(
                        RetiredRefreshToken(token_hash=row.previous_token_hash, session_id=row.id)
                    )
                row.previous_token_hash = row.token_hash
                row.rotated_at = now
            row.token_hash = token_digest(new_token)
            row.last_used_at = now
            user_id, session_id, ends_at = row.user_id, row.id, row.expires_at
            version = (
                await session.exec(select(User.token_version).where(col(User.id) == user_id))
            ).first()
            if version is None:  # the user is gone; the cascade is about to take the row
                raise InvalidRefreshTokenError
            await session.commit()
        log.info("session.refreshed", **ids)
        claims = AccessClaims(user_id=user_id, version=version, session_id=session_id)
        return TokenPair(
            access=self.tokens.issue(claims),
            refresh_token=new_token,
            session_id=session_id,
            session_ends_at=ends_at,
        )

    async def _refuse_unknown_or_retired(
        self, session: AsyncSession, digest: str, *, request_id: str | None
    ) -> NoReturn:
        """Refuse a token that is neither a session's current nor its previous one: a
        retired token of a session in force ends that session as a reuse first."""
        query = (
            select(LoginSession)
            .join(RetiredRefreshToken, col(RetiredRefreshToken.session_id) == col(LoginSession.id))
            .where(col(RetiredRefreshToken.token_hash) == digest)
            .with_for_update(of=LoginSession)
        )
        row = (await session.exec(query)).first()
        now = datetime.now(UTC)
        if row is None:
            log.info("session.refresh_refused", reason="unknown")
        elif not is_live(row, self.policy, now=now):
            ids = {"user_id": str(row.user_id), "session_id": str(row.id)}
            log.info("session.refresh_refused", reason="ended_or_expired", **ids)
        else:
            await self._end_reused(session, row, now=now, request_id=request_id)
        raise InvalidRefreshTokenError

    async def _end_reused(
        self,
        session: AsyncSession,
        row: LoginSession,
        *,
        now: datetime,
        request_id: str | None,
    ) -> None:
        """End the locked session ``row`` for reuse, stage its owner's email, commit,
        and push the email (the relay does, if Redis fails now)."""
        row.revoked_at = now
        row.revoked_reason = "reuse"
        owner = await session.get(User, row.user_id)
        notice = None
        if owner is not None:  # else the user is gone, and the cascade takes the row
            notice = SessionReuseEmail(
                user_id=owner.id,
                email=owner.email,
                display_name=owner.display_name,
                locale=owner.locale,
                request_id=request_id,
                session_started_at=row.created_at,
                user_agent=row.user_agent,
                client_network=row.client_network,
            )
            await self.dispatcher.stage(session, notice)
        await session.commit()
        log.warning(
            "session.reuse_detected",
            user_id=str(row.user_id),
            session_id=str(row.id),
            message_id=None if notice is None else str(notice.message_id),
        )
        if notice is not None:
            await self.dispatcher.publish_after_commit(session, notice, user_id=notice.user_id)

    async def list_in_force(self, *, user_id: uuid.UUID) -> Sequence[LoginSession]:
        """``user_id``'s sessions in force, the most recently used first."""
        async with self.sessions() as session:
            query = (
                select(LoginSession)
                .where(
                    col(LoginSession.user_id) == user_id, live(self.policy, now=datetime.now(UTC))
                )
                .order_by(col(LoginSession.last_used_at).desc())
            )
            return (await session.exec(query)).all()

    async def session_of(self, *, refresh_token: str) -> uuid.UUID:
        """The id of the session ``refresh_token`` is the current, the previous or a
        retired token of, for its per-session rate limit before ``refresh``; raises
        ``InvalidRefreshTokenError`` if it is none of any session.

        One unlocked read by the SHA-256 (the unique index on ``token_hash``, the
        partial one on ``previous_token_hash``), in and out of its own transaction:
        it changes nothing and decides nothing but the session to count. Whether
        the token is still accepted is ``refresh``'s to decide, under its lock (a
        rotation in between keeps the token in the same session). A session ended
        or expired is still named, so its refreshes count against it too.
        """
        digest = token_digest(refresh_token)
        async with self.sessions() as session:
            query = select(LoginSession.id).where(
                or_(
                    col(LoginSession.token_hash) == digest,
                    col(LoginSession.previous_token_hash) == digest,
                )
            )
            session_id = (await session.exec(query)).first()
            if session_id is None:  # an older token of a session: a reuse, for refresh
                retired = select(RetiredRefreshToken.session_id).where(
                    col(RetiredRefreshToken.token_hash) == digest
                )
                session_id = (await session.exec(retired)).first()
        if session_id is None:
            log.info("session.refresh_refused", reason="unknown")
            raise InvalidRefreshTokenError
        return session_id

    async def end(self, *, user_id: uuid.UUID, session_id: uuid.UUID, reason: EndReason) -> bool:
        """End ``user_id``'s session ``session_id``; whether one in force was ended."""
        async with self.sessions() as session:
            ended = await end_sessions(
                session,
                user_id=user_id,
                reason=reason,
                only=session_id,
                policy=self.policy,
            )
            await session.commit()
        log.info("session.ended", user_id=str(user_id), session_id=str(session_id), reason=reason)
        return ended == 1

    async def end_others(self, *, user_id: uuid.UUID, keep: uuid.UUID | None) -> int:
        """End every session of ``user_id`` but ``keep``; how many were ended."""
        async with self.sessions() as session:
            ended = await end_sessions(
                session, user_id=user_id, reason="ended_by_other", keep=keep, policy=self.policy
            )
            await session.commit()
        log.info("session.others_ended", user_id=str(user_id), ended=ended)
        return ended


@dataclass(frozen=True)
class OpenedSession:
    """A session row added to an open transaction, and its refresh token."""

    id: uuid.UUID
    user_id: uuid.UUID
    refresh_token: str
    expires_at: datetime


def open_session(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    user_agent: str | None,
    client: str,
    policy: SessionPolicy,
) -> OpenedSession:
    """Add a new session of ``user_id`` to the open transaction; its caller commits,
    then hands out ``SessionService.first_pair``."""
    refresh_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    now = datetime.now(UTC)
    row = LoginSession(
        user_id=user_id,
        token_hash=token_digest(refresh_token),
        created_at=now,
        last_used_at=now,
        expires_at=now + policy.max_age,
        user_agent=as_printable(user_agent or "") or None,
        client_network=client_network(client),
    )
    session.add(row)
    return OpenedSession(
        id=row.id, user_id=user_id, refresh_token=refresh_token, expires_at=row.expires_at
    )


async def end_sessions(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    reason: EndReason,
    only: uuid.UUID | None = None,
    keep: uuid.UUID | None = None,
    policy: SessionPolicy | None = None,
) -> int:
    """Mark ``user_id``'s sessions ended in the open transaction; how many were in force.

    ``only``: that session alone; ``keep``: all but that one. Used by password changes
    and resets too, in their own transaction.
    """
    now = datetime.now(UTC)
    condition = and_(
        col(LoginSession.user_id) == user_id,
        live(policy, now=now) if policy else col(LoginSession.revoked_at).is_(None),
    )
    if only is not None:
        condition = and_(condition, col(LoginSession.id) == only)
    if keep is not None:
        condition = and_(condition, col(LoginSession.id) != keep)
    result = await session.exec(
        update(LoginSession).where(condition).values(revoked_at=func.now(), revoked_reason=reason)
    )
    return result.rowcount

"""Auth's FastAPI dependencies: the caller (user and session), and rate limits bound to
its address."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import and_
from sqlmodel import col, select

from herald_api.auth.models import LoginSession, User
from herald_api.auth.ratelimit import Action, RateLimiter
from herald_api.auth.runtime import Auth
from herald_api.auth.sessions import SessionService, live
from herald_api.auth.tokens import InvalidAccessTokenError
from herald_api.core.deps import ClientAddressDep, InfrastructureDep

log = structlog.get_logger(__name__)


async def get_auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


AuthDep = Annotated[Auth, Depends(get_auth)]


@dataclass(frozen=True)
class ClientLimits:
    """The rate limiter, bound to the address of the request's client."""

    limiter: RateLimiter
    client: str

    async def check(
        self, action: Action, *, email: str | None = None, session: uuid.UUID | None = None
    ) -> None:
        """Count one ``action`` attempt per client address, then per its subject if
        given (``RateLimiter.check``); 429 over a limit."""
        await self.limiter.check(action, client=self.client, email=email, session=session)

    async def check_subject(
        self, action: Action, *, email: str | None = None, session: uuid.UUID | None = None
    ) -> None:
        """Count one ``action`` attempt per its subject only, after ``check(action)``
        counted it per client (``RateLimiter.check_subject``); 429 over a limit."""
        await self.limiter.check_subject(action, client=self.client, email=email, session=session)


async def get_limits(auth: AuthDep, client: ClientAddressDep) -> ClientLimits:
    return ClientLimits(limiter=auth.rate_limiter, client=client)


RateLimitsDep = Annotated[ClientLimits, Depends(get_limits)]


async def get_session_service(auth: AuthDep) -> SessionService:
    return auth.login_sessions


SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]


_access_token = OAuth2PasswordBearer(
    tokenUrl="/api/v1/auth/token",
    auto_error=False,
    scheme_name="AccessToken",
    description="An access token from POST /api/v1/auth/token (username = email address).",
)

NOT_AUTHENTICATED = "A valid access token is required."


def _not_authenticated(error: str | None = None) -> HTTPException:
    # RFC 6750 3.1: a request without a token gets no error code, a bad token "invalid_token".
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=NOT_AUTHENTICATED,
        headers={"WWW-Authenticate": challenge},
    )


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the user, and the session its access token belongs to."""

    user: User
    session_id: uuid.UUID | None
    """None only for a token issued before sessions existed (``AccessClaims.session_id``)."""


async def get_caller(
    auth: AuthDep,
    infrastructure: InfrastructureDep,
    token: Annotated[str | None, Depends(_access_token)],
) -> Caller:
    """The user and session the request's bearer access token was issued to; 401 for
    any other request.

    One answer for a missing, forged, expired or foreign token, a deleted
    user's, one issued before the user's password last changed, and one of a
    session that ended (logout, ended from the session list, reuse detected) or
    expired: the caller learns only that it must log in (again). The session is
    checked in the same query as the user (a primary-key join), so logging out
    stops the access tokens at once.
    """
    if not token:  # no Authorization header, another scheme, or "Bearer" alone
        raise _not_authenticated()
    try:
        claims = auth.tokens.decode(token)
    except InvalidAccessTokenError as exc:
        log.info("access_token.rejected", reason=str(exc))
        raise _not_authenticated("invalid_token") from None
    session_live = True
    async with infrastructure.sessions() as session:
        if claims.session_id is None:
            user = await session.get(User, claims.user_id)
        else:
            policy = auth.login_sessions.policy
            query = (
                select(User, LoginSession.id)
                .outerjoin(
                    LoginSession,
                    and_(
                        col(LoginSession.id) == claims.session_id,
                        col(LoginSession.user_id) == col(User.id),
                        live(policy, now=datetime.now(UTC)),
                    ),
                )
                .where(col(User.id) == claims.user_id)
            )
            row = (await session.exec(query)).first()
            user = None if row is None else row[0]
            session_live = row is not None and row[1] is not None
    if user is None:
        log.info("access_token.rejected", reason="user_gone", user_id=str(claims.user_id))
        raise _not_authenticated("invalid_token")
    if user.token_version != claims.version:
        # Issued before the password last changed: that change signed it out.
        log.info("access_token.rejected", reason="revoked", user_id=str(user.id))
        raise _not_authenticated("invalid_token")
    if not session_live:
        log.info(
            "access_token.rejected",
            reason="session_ended",
            user_id=str(user.id),
            session_id=str(claims.session_id),
        )
        raise _not_authenticated("invalid_token")
    return Caller(user=user, session_id=claims.session_id)


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_current_user(caller: CallerDep) -> User:
    """The user of ``get_caller``: what most routes need."""
    return caller.user


CurrentUserDep = Annotated[User, Depends(get_current_user)]

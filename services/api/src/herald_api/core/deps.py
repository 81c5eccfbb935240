"""FastAPI dependencies, as ``Annotated`` aliases the routes declare.

Every dependency is ``async def``, even those that never await: FastAPI runs
a plain ``def`` dependency in its thread pool, and those hops were about a
tenth of the API's CPU per signup (py-spy, make bench --profile).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

import structlog
from asgi_correlation_id import correlation_id
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.models import User
from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.ratelimit import UNKNOWN_CLIENT, RateLimiter
from herald_api.auth.tokens import InvalidAccessTokenError, decode_access_token
from herald_api.outbox.dispatch import Dispatcher
from herald_api.resources import Resources


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async with resources.sessions() as session:
        yield session


async def get_hasher(resources: ResourcesDep) -> PasswordHasher:
    return resources.hasher


async def get_dispatcher(resources: ResourcesDep) -> Dispatcher:
    return resources.dispatcher


async def get_request_id() -> str | None:
    return correlation_id.get()


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="InternalToken",
    description="HERALD_INTERNAL_TOKEN of the API (the scheduler holds the same value).",
)


async def require_internal_token(
    resources: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let a request through only with ``Authorization: Bearer <HERALD_INTERNAL_TOKEN>``.

    Without a configured token the internal routes do not exist (404), so a
    deployment that never set one exposes nothing to guess at.
    """
    expected = resources.settings.internal_token
    if expected is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="Not Found")
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="A valid internal bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )


SessionDep = Annotated[AsyncSession, Depends(get_session)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
InternalAuthDep = Annotated[None, Depends(require_internal_token)]


async def get_rate_limiter(resources: ResourcesDep) -> RateLimiter:
    return resources.rate_limiter


async def get_client_address(request: Request) -> str:
    """The client's IP address, as uvicorn determined it.

    Behind a reverse proxy that is the X-Forwarded-For address, but only when
    the proxy is one of ``HERALD_FORWARDED_ALLOW_IPS``; otherwise anyone could
    pick the address their attempts are counted against.
    """
    return request.client.host if request.client is not None else UNKNOWN_CLIENT


RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
ClientAddressDep = Annotated[str, Depends(get_client_address)]


_log = structlog.get_logger(__name__)

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


async def get_current_user(
    resources: ResourcesDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(_access_token)],
) -> User:
    """The user the request's bearer access token was issued to; 401 for any other request.

    One answer for a missing, forged, expired or foreign token, a deleted
    user's, and one issued before the user's password last changed: the
    caller learns only that it must log in (again).
    """
    if not token:  # no Authorization header, another scheme, or "Bearer" alone
        raise _not_authenticated()
    try:
        claims = decode_access_token(token, settings=resources.settings)
    except InvalidAccessTokenError as exc:
        _log.info("access_token.rejected", reason=str(exc))
        raise _not_authenticated("invalid_token") from None
    user = await session.get(User, claims.user_id)
    if user is None:
        _log.info("access_token.rejected", reason="user_gone", user_id=str(claims.user_id))
        raise _not_authenticated("invalid_token")
    if user.token_version != claims.version:
        # Issued before the password last changed: that change signed it out.
        _log.info("access_token.rejected", reason="revoked", user_id=str(user.id))
        raise _not_authenticated("invalid_token")
    return user


CurrentUserDep = Annotated[User, Depends(get_current_user)]

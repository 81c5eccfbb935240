"""Auth's HTTP surface that is not a route: the 429 answer of a rate limit, and the
uncacheable token responses (the refresh token in the body, or in its cookie)."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse

from herald_api.auth.cookies import RefreshTokenIn, set_refresh_cookie
from herald_api.auth.ratelimit import RateLimitedError
from herald_api.auth.schemas import AccessToken, TokenPairBody
from herald_api.auth.sessions import TokenPair
from herald_api.auth.tokens import IssuedToken


def rate_limit_responses(subject: str) -> dict[int | str, dict[str, Any]]:
    """The 429 answer of a route whose attempts are counted per client address and per
    ``subject`` ("for this email address"), for its ``responses=``."""
    return {
        HTTPStatus.TOO_MANY_REQUESTS.value: {
            "description": f"Too many attempts from this client address or {subject}; "
            "try again after Retry-After seconds.",
            "headers": {
                "Retry-After": {
                    "description": "Seconds until the limit that refused has room again.",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
        }
    }


RATE_LIMIT_RESPONSES = rate_limit_responses("for this email address")
"""The answer of every route that checks a per-email rate limit, for its ``responses=``."""


def too_many_attempts(retry_after: int) -> str:
    """The 429 detail for ``retry_after`` seconds."""
    unit = "second" if retry_after == 1 else "seconds"
    return f"Too many attempts; try again in {retry_after} {unit}."


async def rate_limited(request: Request, exc: Exception) -> JSONResponse:
    # The limiter logged and counted the refusal: a route that catches the error
    # itself (to answer alike either way) must not hide it from the metrics.
    assert isinstance(exc, RateLimitedError)
    return JSONResponse(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        content={"detail": too_many_attempts(exc.retry_after)},
        headers={"Retry-After": str(exc.retry_after)},
    )


def install(app: FastAPI) -> None:
    """Answer ``RateLimitedError`` with 429 and ``Retry-After``."""
    app.add_exception_handler(RateLimitedError, rate_limited)


def token_response(response: Response, issued: IssuedToken) -> AccessToken:
    """The body carrying ``issued``, with ``response`` made uncacheable."""
    # RFC 6749 5.1: a response carrying a token must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return AccessToken(access_token=issued.token, expires_in=issued.expires_in)


def token_pair_response(response: Response, pair: TokenPair) -> TokenPairBody:
    """The body carrying ``pair``, with ``response`` made uncacheable."""
    token_response(response, pair.access)
    return TokenPairBody(
        access_token=pair.access.token,
        expires_in=pair.access.expires_in,
        refresh_token=pair.refresh_token,
    )


def tokens_response(
    response: Response, pair: TokenPair, *, carrier: RefreshTokenIn
) -> TokenPairBody | AccessToken:
    """The answer carrying ``pair``: both tokens in the body (``carrier`` "body"), or
    the access token in the body and the refresh token in its cookie
    (``auth.cookies``), alive as long as its session can be."""
    if carrier == "body":
        return token_pair_response(response, pair)
    max_age = int((pair.session_ends_at - datetime.now(UTC)).total_seconds())
    set_refresh_cookie(response, pair.refresh_token, max_age=max(max_age, 0))
    return token_response(response, pair.access)

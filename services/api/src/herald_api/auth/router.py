"""Logging in (the OAuth2 password flow, answered with a bearer access token and a refresh
token), refreshing, and logging out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Depends, Header, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import TypeAdapter, ValidationError

from herald_api.auth.cookies import (
    CSRF_HEADER,
    CSRF_RESPONSES,
    REFRESH_COOKIE,
    RefreshTokenIn,
    RefreshTokenInQuery,
    cleared_refresh_cookie,
    require_same_origin,
)
from herald_api.auth.deps import AuthDep, CallerDep, RateLimitsDep, SessionServiceDep
from herald_api.auth.http import RATE_LIMIT_RESPONSES, rate_limit_responses, tokens_response
from herald_api.auth.login import EmailNotVerifiedError, InvalidCredentialsError
from herald_api.auth.schemas import AccessToken, Email, RefreshRequest, TokenPairBody
from herald_api.auth.sessions import InvalidRefreshTokenError
from herald_api.core.deps import ClientAddressDep, RequestIdDep
from herald_api.core.errors import (
    BODY_RESPONSES,
    BODY_TOO_LARGE,
    UNAVAILABLE_RESPONSES,
    require_json_body,
)

router = APIRouter(prefix="/auth", tags=["auth"])

INCORRECT_CREDENTIALS = "Incorrect email or password."
EMAIL_NOT_VERIFIED = "Verify your email address before logging in."

_email = TypeAdapter(Email)


LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: {"description": "The form body could not be parsed."},
    status.HTTP_401_UNAUTHORIZED: {
        "description": f"{INCORRECT_CREDENTIALS} The same answer, after the same work, "
        "whether the address has no account or the password is wrong.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    status.HTTP_403_FORBIDDEN: {
        "description": f"{EMAIL_NOT_VERIFIED} Only ever after the right password."
    },
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": BODY_TOO_LARGE},
    **RATE_LIMIT_RESPONSES,
    **UNAVAILABLE_RESPONSES,
}


def normalised_email(username: str) -> str | None:
    """``username`` as signup stores addresses, or None if it is not an email address."""
    try:
        return _email.validate_python(username)
    except ValidationError:
        return None


@router.post("/token", responses=LOGIN_RESPONSES)
async def log_in_for_access_token(
    *,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    response: Response,
    limits: RateLimitsDep,
    auth: AuthDep,
    client: ClientAddressDep,
    carrier: RefreshTokenInQuery = "body",
    user_agent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenPairBody | AccessToken:
    """Log in with the OAuth2 password flow: ``username`` is the email address.

    - Unknown address and wrong password get the same 401 with
      ``WWW-Authenticate: Bearer``, after the same argon2id work (an unknown
      address is verified against a dummy hash), so neither the answer nor its
      timing tells whether an address has an account. A ``username`` that is
      not an email address at all gets that 401 too, not a 422: it has no
      account either, and one answer for every failure leaves nothing to
      probe.
    - Unverified accounts may not log in: with the right password, an account
      whose email address was never verified gets 403. That reveals the
      account exists only to someone who already has its password.
    - A right password whose stored hash has weaker argon2id parameters than
      the current ones is rehashed and stored on the way.
    - Counts against the login rate limits, per client address and per email
      address, before any work (429 with ``Retry-After`` over either).

    The access token is an HS256 JWT valid for ``expires_in`` seconds; send it
    as ``Authorization: Bearer <token>``. The login starts a session (see
    ``GET /api/v1/users/me/sessions``); its ``refresh_token`` gets new tokens
    at ``POST /api/v1/auth/refresh`` until the session has been idle for
    ``HERALD_SESSION_IDLE_DAYS`` (30) or lived ``HERALD_SESSION_MAX_DAYS`` (90).
    With ``?refresh_token_in=cookie`` (browser apps) the refresh token comes in
    an ``HttpOnly`` cookie scoped to the refresh route instead of the body.
    """
    email = normalised_email(form.username)
    await limits.check("login", email=email)
    try:
        pair = await auth.login.log_in(
            email=email, password=form.password, user_agent=user_agent, client=client
        )
    except InvalidCredentialsError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=INCORRECT_CREDENTIALS,
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    except EmailNotVerifiedError:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail=EMAIL_NOT_VERIFIED
        ) from None
    return tokens_response(response, pair, carrier=carrier)


INVALID_REFRESH_TOKEN = "The refresh token is invalid or expired; log in again."  # noqa: S105

REFRESH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **BODY_RESPONSES,
    status.HTTP_401_UNAUTHORIZED: {
        "description": f"{INVALID_REFRESH_TOKEN} One answer for an unknown, replaced, "
        "ended or expired token (or none sent); a replaced token presented after the "
        "grace window also ends its session (reuse detection). A refresh by cookie "
        "also gets the cookie deleted."
    },
    **CSRF_RESPONSES,
    **rate_limit_responses("for this session"),
    **UNAVAILABLE_RESPONSES,
}


@router.post("/refresh", responses=REFRESH_RESPONSES, dependencies=[Depends(require_json_body)])
async def refresh_tokens(
    *,
    response: Response,
    limits: RateLimitsDep,
    sessions: SessionServiceDep,
    request_id: RequestIdDep,
    body: RefreshRequest | None = None,
    cookie: Annotated[str | None, Cookie(alias=REFRESH_COOKIE, max_length=128)] = None,
    csrf: Annotated[str | None, Header(alias=CSRF_HEADER)] = None,
    sec_fetch_site: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenPairBody | AccessToken:
    """Exchange a refresh token for a new access token and a new refresh token.

    The token comes in the body (``{"refresh_token": ...}``, answered in the
    body), or, with no body, in the ``herald_refresh`` cookie a login with
    ``?refresh_token_in=cookie`` set (answered with the access token in the
    body and the next refresh token in the cookie). A refresh by cookie must
    send ``X-Herald-CSRF: 1`` and, from a browser, come from this origin
    (``Sec-Fetch-Site``): else 403 and nothing happens.

    Rotation: the refresh token sent is replaced; keep the new one. Sent again
    within ``HERALD_REFRESH_GRACE_SECONDS`` (default 5 s: two refreshes of one
    client at once), it is accepted and answered with another fresh pair, which
    replaces the first one's. Sent again later, it is taken for a stolen token
    (RFC 9700 §4.14): the session ends, every token of it stops working, the
    answer is 401, and the account's owner is emailed which session it was.
    So does any earlier token of the session, however old.

    Rate limits: ``HERALD_RATE_LIMIT_REFRESH_PER_CLIENT`` (120 a minute) counts
    every refresh of the client address before any other work, unknown tokens
    included; ``HERALD_RATE_LIMIT_REFRESH_PER_SESSION`` (10 a minute, 60 an
    hour) counts the refreshes of the token's session. Over either: 429 with
    ``Retry-After``, and nothing else happens: the token is not replaced, the
    session is untouched, and the same token refreshes once the limit has room.
    """
    carrier: RefreshTokenIn = "body"
    if body is not None:
        token = body.refresh_token
    elif cookie is not None:
        require_same_origin(csrf=csrf, fetch_site=sec_fetch_site)
        token, carrier = cookie, "cookie"
    else:
        raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED, detail=INVALID_REFRESH_TOKEN)
    await limits.check("refresh")
    try:
        session_id = await sessions.session_of(refresh_token=token)
        await limits.check_subject("refresh", session=session_id)
        pair = await sessions.refresh(refresh_token=token, request_id=request_id)
    except InvalidRefreshTokenError:
        headers = {"Set-Cookie": cleared_refresh_cookie()} if carrier == "cookie" else {}
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail=INVALID_REFRESH_TOKEN, headers=headers
        ) from None
    return tokens_response(response, pair, carrier=carrier)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        status.HTTP_401_UNAUTHORIZED: {"description": "A valid access token is required."},
        **UNAVAILABLE_RESPONSES,
    },
)
async def log_out(caller: CallerDep, auth: AuthDep, response: Response) -> None:
    """End the session of the request's access token: its refresh token and its access
    tokens (this one included) stop working at once. A refresh cookie (cookie mode)
    is deleted too."""
    response.headers["Set-Cookie"] = cleared_refresh_cookie()
    if caller.session_id is not None:
        await auth.login_sessions.end(
            user_id=caller.user.id, session_id=caller.session_id, reason="logout"
        )

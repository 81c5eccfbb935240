"""The caller's own account."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Response, status

from herald_api.accounts import email_change
from herald_api.accounts.deletion import delete_account
from herald_api.accounts.password_change import change_password, confirm_password
from herald_api.auth.models import (
    Accepted,
    AccessToken,
    EmailChange,
    PasswordChange,
    PasswordConfirmation,
    UserPublic,
)
from herald_api.auth.ratelimit import RATE_LIMIT_RESPONSES
from herald_api.auth.tokens import AccessClaims, access_token_response
from herald_api.core.background import after_response
from herald_api.core.deps import (
    ClientAddressDep,
    CurrentUserDep,
    DispatcherDep,
    HasherDep,
    RateLimiterDep,
    RequestIdDep,
    ResourcesDep,
    SessionDep,
)
from herald_api.core.errors import (
    BODY_RESPONSES,
    DATABASE_UNAVAILABLE,
    WRONG_PASSWORD,
    require_json_body,
)

router = APIRouter(prefix="/users", tags=["users"])

EMAIL_CHANGE_REQUESTED = (
    "If no account has this address yet, a link to confirm it is on its way. Your account "
    "keeps its current address until the link is opened."
)

UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    status.HTTP_401_UNAUTHORIZED: {
        "description": "No access token, or one that is invalid, expired, or whose user "
        "no longer exists.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    status.HTTP_503_SERVICE_UNAVAILABLE: {"description": DATABASE_UNAVAILABLE},
}

CONFIRMED_BY_PASSWORD: dict[int | str, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: {"description": WRONG_PASSWORD},
    **UNAUTHENTICATED,
    **BODY_RESPONSES,
    **RATE_LIMIT_RESPONSES,
}
"""The answers of a step confirmed with the caller's password (``WrongPasswordError``
becomes the 400)."""


@router.get("/me", responses=UNAUTHENTICATED)
async def read_current_user(user: CurrentUserDep) -> UserPublic:
    """The profile of the user the bearer access token was issued to."""
    return UserPublic.of(user)


@router.post(
    "/me/password",
    responses=CONFIRMED_BY_PASSWORD,
    dependencies=[Depends(require_json_body)],
)
async def change_own_password(
    body: PasswordChange,
    user: CurrentUserDep,
    response: Response,
    session: SessionDep,
    hasher: HasherDep,
    dispatcher: DispatcherDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> AccessToken:
    """Change the caller's password; answered with a fresh access token.

    The current password is checked first (``400`` if wrong; each attempt
    counts against the login rate limits of the client and the account, as
    it is a password guess too); the new one follows the signup rules
    (``422``). Every access token issued before, the one sent with this
    request included, stops working; the account's address is told that its
    password changed.
    """
    await limiter.check("login", client=client, email=user.email)
    changed = await change_password(
        session,
        hasher,
        dispatcher,
        user=user,
        current_password=body.current_password.get_secret_value(),
        new_password=body.new_password.get_secret_value(),
        request_id=request_id,
    )
    claims = AccessClaims(user_id=changed.id, version=changed.token_version)
    return access_token_response(response, claims=claims, settings=resources.settings)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=CONFIRMED_BY_PASSWORD,
    dependencies=[Depends(require_json_body)],
)
async def delete_own_account(
    body: PasswordConfirmation,
    user: CurrentUserDep,
    session: SessionDep,
    hasher: HasherDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
) -> None:
    """Delete the caller's account, confirmed with its password (``400`` if wrong;
    each attempt counts against the login rate limits, as a password guess).

    The account, its link tokens and its outbox messages are deleted; every
    access token of the account stops working; the address can sign up again.
    """
    await limiter.check("login", client=client, email=user.email)
    await delete_account(session, hasher, user=user, password=body.password.get_secret_value())


@router.post(
    "/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    responses=CONFIRMED_BY_PASSWORD,
    dependencies=[Depends(require_json_body)],
)
async def change_own_email(
    body: EmailChange,
    user: CurrentUserDep,
    background: BackgroundTasks,
    session: SessionDep,
    hasher: HasherDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> Accepted:
    """Ask to move the caller's account to ``new_email``, confirmed with its password
    (``400`` if wrong; counted as a login attempt).

    Always the same ``202`` after the right password: the new address is
    looked up after the response, and only a free one is sent a link (only
    the newest works; each counts against the resend limits of that
    address). The account keeps its address until the link is opened
    (``POST /api/v1/auth/verify``); then the new one counts as verified and
    the previous one is told.
    """
    await limiter.check("login", client=client, email=user.email)
    await limiter.check("resend", client=client, email=body.new_email)
    user_id, _ = await confirm_password(
        session, hasher, user=user, password=body.password.get_secret_value()
    )
    settings = resources.settings
    after_response(
        background,
        lambda: email_change.request_change(
            sessions=resources.sessions,
            dispatcher=resources.dispatcher,
            user_id=user_id,
            new_email=body.new_email,
            secret=settings.link_secret,
            valid_for=timedelta(hours=settings.verification_link_hours),
            request_id=request_id,
        ),
        failed="email_change.request_failed",
    )
    return Accepted(email=body.new_email, detail=EMAIL_CHANGE_REQUESTED)

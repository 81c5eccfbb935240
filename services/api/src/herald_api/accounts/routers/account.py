"""The caller's own account."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Header, HTTPException, Response, status

from herald_api.accounts.deps import AccountServiceDep, UserIdempotencyDep
from herald_api.accounts.http import WRONG_PASSWORD, idempotent_responses
from herald_api.accounts.schemas import (
    Accepted,
    EmailChange,
    PasswordChange,
    PasswordConfirmation,
    ProfileUpdate,
    UserPublic,
)
from herald_api.auth import CurrentUserDep, RateLimitsDep
from herald_api.auth.cookies import RefreshTokenInQuery
from herald_api.auth.deps import NOT_AUTHENTICATED
from herald_api.auth.http import RATE_LIMIT_RESPONSES, tokens_response
from herald_api.auth.schemas import AccessToken, TokenPairBody
from herald_api.core.background import after_response
from herald_api.core.errors import BODY_RESPONSES, UNAVAILABLE_RESPONSES, require_json_body

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
    **UNAVAILABLE_RESPONSES,
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


@router.patch(
    "/me",
    responses={**UNAUTHENTICATED, **BODY_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def update_current_user(
    body: ProfileUpdate, user: CurrentUserDep, accounts: AccountServiceDep
) -> UserPublic:
    """Change the caller's ``display_name`` and/or ``locale`` (at least one; ``422``
    otherwise, or for a tag that is no known locale). Emails staged from then on
    greet with the new name, in the new language; the answer is the profile now."""
    try:
        changed = await accounts.update_profile(
            user, display_name=body.display_name, locale=body.locale
        )
    except LookupError:  # the account was deleted after its token was checked
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=NOT_AUTHENTICATED,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None
    return UserPublic.of(changed)


@router.post(
    "/me/password",
    responses=CONFIRMED_BY_PASSWORD,
    dependencies=[Depends(require_json_body)],
)
async def change_own_password(
    *,
    body: PasswordChange,
    user: CurrentUserDep,
    response: Response,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
    carrier: RefreshTokenInQuery = "body",
    user_agent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> TokenPairBody | AccessToken:
    """Change the caller's password; answered with the tokens of a new session.

    The current password is checked first (``400`` if wrong; each attempt
    counts against the login rate limits of the client and the account, as
    it is a password guess too); the new one follows the signup rules
    (``422``). Every session of the account ends and every access token
    issued before, the one sent with this request included, stops working;
    this device stays signed in with the new session's access and refresh
    tokens (as ``POST /api/v1/auth/token`` answers, ``?refresh_token_in=cookie``
    included). The account's address is told that its password changed.
    """
    await limits.check("login", email=user.email)
    changed = await accounts.change_password(
        user,
        current_password=body.current_password.get_secret_value(),
        new_password=body.new_password.get_secret_value(),
        user_agent=user_agent,
        client=limits.client,
    )
    return tokens_response(response, changed.tokens, carrier=carrier)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=CONFIRMED_BY_PASSWORD,
    dependencies=[Depends(require_json_body)],
)
async def delete_own_account(
    body: PasswordConfirmation,
    user: CurrentUserDep,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
) -> None:
    """Delete the caller's account, confirmed with its password (``400`` if wrong;
    each attempt counts against the login rate limits, as a password guess).

    The account, its link tokens and its outbox messages are deleted; every
    access token of the account stops working; the address can sign up again.
    """
    await limits.check("login", email=user.email)
    await accounts.delete_account(user, password=body.password.get_secret_value())


@router.post(
    "/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**CONFIRMED_BY_PASSWORD, **idempotent_responses(status.HTTP_202_ACCEPTED)},
    dependencies=[Depends(require_json_body)],
)
async def change_own_email(
    *,
    body: EmailChange,
    user: CurrentUserDep,
    background: BackgroundTasks,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
    idempotency: UserIdempotencyDep,
) -> Accepted:
    """Ask to move the caller's account to ``new_email``, confirmed with its password
    (``400`` if wrong; counted as a login attempt).

    Always the same ``202`` after the right password: the new address is
    looked up after the response, and only a free one is sent a link (only
    the newest works; each counts against the resend limits of that
    address). The account keeps its address until the link is opened
    (``POST /api/v1/auth/verify``); then the new one counts as verified and
    the previous one is told. A retry with the same ``Idempotency-Key`` (its
    scope: this account) and body gets the first answer again and emails nothing.
    """
    answer = Accepted(email=body.new_email, detail=EMAIL_CHANGE_REQUESTED)
    claim = await idempotency.begin(status.HTTP_202_ACCEPTED, answer)
    await limits.check("login", email=user.email)
    await limits.check("resend", email=body.new_email)
    confirmed = await accounts.confirm_password(user, body.password.get_secret_value())
    after_response(
        background,
        lambda: accounts.request_email_change(
            user_id=confirmed.user_id, new_email=body.new_email, idempotency=claim
        ),
        failed="email_change.request_failed",
    )
    return answer

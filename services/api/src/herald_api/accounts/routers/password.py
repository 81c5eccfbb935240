"""Forgotten passwords: ask for a reset link, and spend it on a new password."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status

from herald_api.accounts.deps import AccountServiceDep, IdempotencyDep
from herald_api.accounts.http import idempotent_responses
from herald_api.accounts.schemas import Accepted, EmailRequest, NewPassword, UserPublic
from herald_api.accounts.service import LinkInvalidError
from herald_api.auth import RateLimitsDep
from herald_api.auth.http import RATE_LIMIT_RESPONSES
from herald_api.core.background import after_response
from herald_api.core.errors import BODY_RESPONSES, UNAVAILABLE_RESPONSES, require_json_body

router = APIRouter(prefix="/auth/password", tags=["auth"])

RESET_LINK_INVALID = (
    "This password reset link is invalid, expired or already used. Ask for a new one."
)
RESET_REQUESTED = (
    "If this address has an account, a link to choose a new password is on its way. "
    "Earlier reset links no longer work."
)


@router.post(
    "/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **BODY_RESPONSES,
        **RATE_LIMIT_RESPONSES,
        **idempotent_responses(status.HTTP_202_ACCEPTED),
    },
    dependencies=[Depends(require_json_body)],
)
async def forgot_password(
    body: EmailRequest,
    background: BackgroundTasks,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
    idempotency: IdempotencyDep,
) -> Accepted:
    """Email a link to choose a new password (earlier reset links stop working).

    Always the same 202, answered before the account is even looked up: the
    work runs after the response, so neither the answer nor its timing tells
    whether the address has an account. A retry with the same
    ``Idempotency-Key`` and body gets the first answer again and emails nothing.
    """
    answer = Accepted(email=body.email, detail=RESET_REQUESTED)
    claim = await idempotency.begin(status.HTTP_202_ACCEPTED, answer)
    await limits.check("password_reset", email=body.email)
    after_response(
        background,
        lambda: accounts.request_password_reset(body.email, claim),
        failed="password_reset.request_failed",
    )
    return answer


@router.post(
    "/reset",
    responses={
        status.HTTP_400_BAD_REQUEST: {"description": RESET_LINK_INVALID},
        **BODY_RESPONSES,
        **RATE_LIMIT_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
    dependencies=[Depends(require_json_body)],
)
async def reset_password(
    body: NewPassword, limits: RateLimitsDep, accounts: AccountServiceDep
) -> UserPublic:
    """Spend the token of a password reset link on a new password.

    The new password must meet the signup rules (422 otherwise, and the link
    still works). On success every access token issued before stops working,
    the address counts as verified (the link proved it), and the account's
    address is told that its password changed. An unknown, spent or expired
    token gets one 400.
    """
    await limits.check("password_reset")
    try:
        user = await accounts.reset_password(
            token=body.token, password=body.password.get_secret_value()
        )
    except LinkInvalidError:
        raise HTTPException(
            status_code=status.HTTP_400_BAD_REQUEST, detail=RESET_LINK_INVALID
        ) from None
    return UserPublic.of(user)

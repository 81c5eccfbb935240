"""Email verification: spend a link's token, or ask for a fresh link."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status

from herald_api.accounts.deps import AccountServiceDep, IdempotencyDep
from herald_api.accounts.http import idempotent_responses
from herald_api.accounts.schemas import (
    Accepted,
    AddressVerified,
    AlreadyVerified,
    EmailRequest,
    UserPublic,
    VerifyAnswer,
    VerifyEmail,
)
from herald_api.accounts.service import AddressTakenError, LinkInvalidError
from herald_api.accounts.service import AlreadyVerified as AlreadyDone
from herald_api.auth import RateLimitsDep
from herald_api.auth.http import RATE_LIMIT_RESPONSES
from herald_api.core.background import after_response
from herald_api.core.errors import BODY_RESPONSES, UNAVAILABLE_RESPONSES, require_json_body

router = APIRouter(prefix="/auth/verify", tags=["auth"])

LINK_INVALID = "This verification link is invalid, expired or already used. Ask for a new one."
ALREADY_VERIFIED = "This address is already verified. You can log in now."
ALREADY_CHANGED = (
    "This address change is already confirmed. You can log in with the new address now."
)
ADDRESS_TAKEN = "Another account has this address now; ask to change to another one."
RESEND_ACCEPTED = (
    "If this address has an account that is not verified yet, a new verification link "
    "is on its way. Earlier links no longer work."
)


@router.post(
    "",
    responses={
        status.HTTP_400_BAD_REQUEST: {"description": LINK_INVALID},
        status.HTTP_409_CONFLICT: {"description": ADDRESS_TAKEN},
        **BODY_RESPONSES,
        **UNAVAILABLE_RESPONSES,
    },
    dependencies=[Depends(require_json_body)],
)
async def verify_email(body: VerifyEmail, accounts: AccountServiceDep) -> VerifyAnswer:
    """Spend the token of an address link: a verification link verifies the
    account's address (`status: verified`); an email change link moves the
    account to the address it was sent to, verified, and the previous address
    is told (`status: email_changed`). Both answer the user as it is now.

    A token works once, until it expires, and only for what it was made for.
    A genuine link used again (a second click, a mail scanner's first) whose
    work is done answers `status: already_verified` with no personal data: a
    verification link (spent or expired) whose account is verified, or a spent
    email change link whose account has that address now; judged from the
    link's own account only. Any other token, unknown ones included, gets the
    same 400. An email change whose address another account took meanwhile
    gets 409.
    """
    try:
        verified = await accounts.verify_address(body.token)
    except AddressTakenError:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=ADDRESS_TAKEN) from None
    except LinkInvalidError:
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=LINK_INVALID) from None
    if isinstance(verified, AlreadyDone):
        detail = ALREADY_CHANGED if verified.email_change else ALREADY_VERIFIED
        return AlreadyVerified(status="already_verified", detail=detail)
    return AddressVerified(
        **UserPublic.of(verified.user).model_dump(),
        status="email_changed" if verified.email_changed else "verified",
    )


@router.post(
    "/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **BODY_RESPONSES,
        **RATE_LIMIT_RESPONSES,
        **idempotent_responses(status.HTTP_202_ACCEPTED),
    },
    dependencies=[Depends(require_json_body)],
)
async def resend_verification(
    body: EmailRequest,
    background: BackgroundTasks,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
    idempotency: IdempotencyDep,
) -> Accepted:
    """Email a fresh verification link (earlier ones stop working).

    Always the same 202, answered before the account is even looked up: the
    work runs after the response, so neither the answer nor its timing tells
    whether the address has an unverified account. A retry with the same
    ``Idempotency-Key`` and body gets the first answer again and emails nothing.
    """
    answer = Accepted(email=body.email, detail=RESEND_ACCEPTED)
    claim = await idempotency.begin(status.HTTP_202_ACCEPTED, answer)
    await limits.check("resend", email=body.email)
    after_response(
        background,
        lambda: accounts.resend_verification(body.email, claim),
        failed="verification.resend_failed",
    )
    return answer

"""Email verification: spend a link's token, or ask for a fresh link."""

from __future__ import annotations

from datetime import timedelta

import structlog
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status

from herald_api.accounts import verification
from herald_api.accounts.email_change import AddressTakenError
from herald_api.auth.models import Accepted, EmailRequest, UserPublic, VerifyEmail
from herald_api.auth.ratelimit import RATE_LIMIT_RESPONSES
from herald_api.core.background import after_response
from herald_api.core.deps import (
    ClientAddressDep,
    DispatcherDep,
    RateLimiterDep,
    RequestIdDep,
    ResourcesDep,
    SessionDep,
)
from herald_api.core.errors import BODY_RESPONSES, require_json_body

router = APIRouter(prefix="/auth/verify", tags=["auth"])

log = structlog.get_logger(__name__)

LINK_INVALID = "This verification link is invalid, expired or already used. Ask for a new one."
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
    },
    dependencies=[Depends(require_json_body)],
)
async def verify_email(
    body: VerifyEmail, session: SessionDep, dispatcher: DispatcherDep, request_id: RequestIdDep
) -> UserPublic:
    """Spend the token of an address link: a verification link verifies the
    account's address; an email change link moves the account to the address
    it was sent to (verified), and the previous address is told.

    A token works once, until it expires, and only for what it was made for;
    an unknown, spent or expired one gets the same 400. An email change whose
    address another account took meanwhile gets 409.
    """
    try:
        spent = await verification.spend(
            session, dispatcher, token=body.token, request_id=request_id
        )
    except AddressTakenError:
        await session.rollback()
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=ADDRESS_TAKEN) from None
    if spent is None:
        await session.rollback()
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=LINK_INVALID)
    user, notice = spent
    await session.commit()
    if notice is None:
        log.info("user.verified", user_id=str(user.id))
    else:
        log.info("user.email_changed", user_id=str(user.id))
        await dispatcher.publish_after_commit(session, notice, user_id=user.id)
    return UserPublic.of(user)


@router.post(
    "/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**BODY_RESPONSES, **RATE_LIMIT_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def resend_verification(
    body: EmailRequest,
    background: BackgroundTasks,
    resources: ResourcesDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    request_id: RequestIdDep,
) -> Accepted:
    """Email a fresh verification link (earlier ones stop working).

    Always the same 202, answered before the account is even looked up: the
    work runs after the response, so neither the answer nor its timing tells
    whether the address has an unverified account.
    """
    await limiter.check("resend", client=client, email=body.email)
    settings = resources.settings
    after_response(
        background,
        lambda: verification.resend(
            sessions=resources.sessions,
            dispatcher=resources.dispatcher,
            email=body.email,
            secret=settings.link_secret,
            valid_for=timedelta(hours=settings.verification_link_hours),
            request_id=request_id,
        ),
        failed="verification.resend_failed",
    )
    return Accepted(email=body.email, detail=RESEND_ACCEPTED)

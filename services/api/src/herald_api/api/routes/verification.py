"""Email verification: spend a link's token, or ask for a fresh link."""

from __future__ import annotations

from datetime import timedelta

import structlog
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status

from herald_api import verification
from herald_api.api.background import after_response
from herald_api.api.deps import (
    ClientAddressDep,
    RateLimiterDep,
    RequestIdDep,
    ResourcesDep,
    SessionDep,
)
from herald_api.api.errors import BODY_RESPONSES, require_json_body
from herald_api.models import Accepted, EmailRequest, UserPublic, VerifyEmail
from herald_api.ratelimit import RATE_LIMIT_RESPONSES

router = APIRouter(prefix="/auth/verify", tags=["auth"])

log = structlog.get_logger(__name__)

LINK_INVALID = "This verification link is invalid, expired or already used. Ask for a new one."
RESEND_ACCEPTED = (
    "If this address has an account that is not verified yet, a new verification link "
    "is on its way. Earlier links no longer work."
)


@router.post(
    "",
    responses={status.HTTP_400_BAD_REQUEST: {"description": LINK_INVALID}, **BODY_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def verify_email(body: VerifyEmail, session: SessionDep) -> UserPublic:
    """Spend the token of a verification link: the account's address is verified.

    A token works once, until it expires, and only for this; an unknown,
    spent or expired one gets the same 400.
    """
    user = await verification.spend(session, token=body.token)
    if user is None:
        await session.rollback()
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=LINK_INVALID)
    await session.commit()
    log.info("user.verified", user_id=str(user.id))
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

"""Forgotten passwords: ask for a reset link, and spend it on a new password."""

from __future__ import annotations

from datetime import timedelta

import structlog
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, status

from herald_api.accounts import password_reset
from herald_api.auth.models import Accepted, EmailRequest, NewPassword, UserPublic
from herald_api.auth.ratelimit import RATE_LIMIT_RESPONSES
from herald_api.core.background import after_response
from herald_api.core.deps import (
    ClientAddressDep,
    DispatcherDep,
    HasherDep,
    RateLimiterDep,
    RequestIdDep,
    ResourcesDep,
    SessionDep,
)
from herald_api.core.errors import BODY_RESPONSES, require_json_body

router = APIRouter(prefix="/auth/password", tags=["auth"])

log = structlog.get_logger(__name__)

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
    responses={**BODY_RESPONSES, **RATE_LIMIT_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def forgot_password(
    body: EmailRequest,
    background: BackgroundTasks,
    resources: ResourcesDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    request_id: RequestIdDep,
) -> Accepted:
    """Email a link to choose a new password (earlier reset links stop working).

    Always the same 202, answered before the account is even looked up: the
    work runs after the response, so neither the answer nor its timing tells
    whether the address has an account.
    """
    await limiter.check("password_reset", client=client, email=body.email)
    settings = resources.settings
    after_response(
        background,
        lambda: password_reset.request_reset(
            sessions=resources.sessions,
            dispatcher=resources.dispatcher,
            email=body.email,
            secret=settings.link_secret,
            valid_for=timedelta(minutes=settings.password_reset_link_minutes),
            request_id=request_id,
        ),
        failed="password_reset.request_failed",
    )
    return Accepted(email=body.email, detail=RESET_REQUESTED)


@router.post(
    "/reset",
    responses={
        status.HTTP_400_BAD_REQUEST: {"description": RESET_LINK_INVALID},
        **BODY_RESPONSES,
        **RATE_LIMIT_RESPONSES,
    },
    dependencies=[Depends(require_json_body)],
)
async def reset_password(
    body: NewPassword,
    session: SessionDep,
    hasher: HasherDep,
    dispatcher: DispatcherDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    request_id: RequestIdDep,
) -> UserPublic:
    """Spend the token of a password reset link on a new password.

    The new password must meet the signup rules (422 otherwise, and the link
    still works). On success every access token issued before stops working,
    the address counts as verified (the link proved it), and the account's
    address is told that its password changed. An unknown, spent or expired
    token gets one 400.
    """
    await limiter.check("password_reset", client=client)
    password_hash = await hasher.hash(body.password.get_secret_value())
    reset = await password_reset.reset_password(
        session, dispatcher, token=body.token, password_hash=password_hash, request_id=request_id
    )
    if reset is None:
        await session.rollback()
        raise HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=RESET_LINK_INVALID)
    user, notice = reset
    await session.commit()
    log.info("password.reset", user_id=str(user.id))
    await dispatcher.publish_after_commit(session, notice, user_id=user.id)
    return UserPublic.of(user)

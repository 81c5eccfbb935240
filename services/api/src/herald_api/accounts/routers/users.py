"""Users: sign up."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, status

from herald_api.accounts.signup import sign_up
from herald_api.auth.models import Accepted, UserCreate
from herald_api.auth.ratelimit import RATE_LIMIT_RESPONSES
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

router = APIRouter(prefix="/users", tags=["users"])

SIGNUP_ACCEPTED = "Check your inbox: we sent an email to this address."


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**BODY_RESPONSES, **RATE_LIMIT_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def create_user(
    body: UserCreate,
    session: SessionDep,
    hasher: HasherDep,
    dispatcher: DispatcherDep,
    limiter: RateLimiterDep,
    client: ClientAddressDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> Accepted:
    """Sign up: create the account and email a verification link.

    The answer is the same whether or not the address already had an account
    (the owner of a taken address is emailed instead), so it cannot be used
    to find out who has one.
    """
    await limiter.check("signup", client=client, email=body.email)
    settings = resources.settings
    await sign_up(
        session=session,
        hasher=hasher,
        dispatcher=dispatcher,
        data=body,
        link_secret=settings.link_secret,
        link_valid_for=timedelta(hours=settings.verification_link_hours),
        request_id=request_id,
    )
    return Accepted(email=body.email, detail=SIGNUP_ACCEPTED)

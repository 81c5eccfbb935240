"""Users: sign up."""

from __future__ import annotations

from fastapi import APIRouter, Depends, status

from herald_api.accounts.deps import AccountServiceDep, IdempotencyDep
from herald_api.accounts.http import idempotent_responses
from herald_api.accounts.schemas import Accepted, UserCreate
from herald_api.auth import RateLimitsDep
from herald_api.auth.http import RATE_LIMIT_RESPONSES
from herald_api.core.errors import BODY_RESPONSES, UNAVAILABLE_RESPONSES, require_json_body

router = APIRouter(prefix="/users", tags=["users"])

SIGNUP_ACCEPTED = "Check your inbox: we sent an email to this address."


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **BODY_RESPONSES,
        **RATE_LIMIT_RESPONSES,
        **UNAVAILABLE_RESPONSES,
        **idempotent_responses(status.HTTP_202_ACCEPTED),
    },
    dependencies=[Depends(require_json_body)],
)
async def create_user(
    body: UserCreate,
    limits: RateLimitsDep,
    accounts: AccountServiceDep,
    idempotency: IdempotencyDep,
) -> Accepted:
    """Sign up: create the account and email a verification link.

    The answer is the same whether or not the address already had an account
    (the owner of a taken address is emailed instead), so it cannot be used
    to find out who has one. A retry with the same ``Idempotency-Key`` and body
    gets the first answer again and emails nothing (docs/api.md).
    """
    answer = Accepted(email=body.email, detail=SIGNUP_ACCEPTED)
    claim = await idempotency.begin(status.HTTP_202_ACCEPTED, answer)
    await limits.check("signup", email=body.email)
    await accounts.sign_up(body, idempotency=claim)
    return answer

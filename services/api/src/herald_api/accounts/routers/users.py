"""Users: sign up."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, status

from herald_api.accounts.deps import AccountServiceDep, IdempotencyDep
from herald_api.accounts.http import idempotent_responses
from herald_api.accounts.language import signup_locale
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
    accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Accepted:
    """Sign up: create the account and email a verification link.

    The answer is the same whether or not the address already had an account
    (the owner of a taken address is emailed instead), so it cannot be used
    to find out who has one. A retry with the same ``Idempotency-Key`` and body
    gets the first answer again and emails nothing (docs/api.md).

    The account's language is ``locale`` if given, else the most wanted tag of
    the request's ``Accept-Language`` that is a known locale, else ``en``.
    """
    answer = Accepted(email=body.email, detail=SIGNUP_ACCEPTED)
    claim = await idempotency.begin(status.HTTP_202_ACCEPTED, answer)
    await limits.check("signup", email=body.email)
    locale = body.locale or signup_locale(accept_language)
    await accounts.sign_up(body, locale=locale, idempotency=claim)
    return answer

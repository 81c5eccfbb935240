"""Accounts' FastAPI dependencies: the services, the account service bound to the request,
and the request's ``Idempotency-Key`` in its scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from herald_api.accounts.housekeeping import Housekeeping
from herald_api.accounts.idempotency import (
    KEY_DESCRIPTION,
    KEY_HEADER,
    KEY_PATTERN,
    IdempotencyKeys,
)
from herald_api.accounts.runtime import Accounts
from herald_api.accounts.service import AccountService
from herald_api.auth import CurrentUserDep
from herald_api.core.deps import RequestIdDep


async def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(get_accounts)]


async def get_account_service(accounts: AccountsDep, request_id: RequestIdDep) -> AccountService:
    return accounts.service.for_request(request_id)


async def get_housekeeping(accounts: AccountsDep) -> Housekeeping:
    return accounts.housekeeping


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]
HousekeepingDep = Annotated[Housekeeping, Depends(get_housekeeping)]


IdempotencyKeyHeader = Annotated[
    str | None, Header(alias=KEY_HEADER, pattern=KEY_PATTERN, description=KEY_DESCRIPTION)
]
"""The optional ``Idempotency-Key`` header (a malformed one is the usual 422)."""


def _route(request: Request) -> str:
    """The request's method and path: a key's scope (the routes that take a key have no
    path parameters, so this names the route)."""
    return f"{request.method} {request.url.path}"


async def get_idempotency(
    request: Request, accounts: AccountsDep, key: IdempotencyKeyHeader = None
) -> IdempotencyKeys:
    return await _keys(request, accounts, key, scope=_route(request))


async def get_user_idempotency(
    request: Request, accounts: AccountsDep, user: CurrentUserDep, key: IdempotencyKeyHeader = None
) -> IdempotencyKeys:
    return await _keys(request, accounts, key, scope=f"{_route(request)}\nuser {user.id}")


async def _keys(
    request: Request, accounts: Accounts, key: str | None, *, scope: str
) -> IdempotencyKeys:
    """The request's key in ``scope``, with its body (read only when a key was sent)."""
    body = await request.body() if key is not None else b""
    return accounts.idempotency.for_request(key=key, scope=scope, body=body)


IdempotencyDep = Annotated[IdempotencyKeys, Depends(get_idempotency)]
"""The request's ``Idempotency-Key``, scoped to its route."""
UserIdempotencyDep = Annotated[IdempotencyKeys, Depends(get_user_idempotency)]
"""The request's ``Idempotency-Key``, scoped to its route and its caller (authenticated
routes: two users' keys never meet)."""

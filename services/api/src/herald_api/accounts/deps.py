"""Accounts' FastAPI dependencies: the services, the account service bound to the request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from herald_api.accounts.housekeeping import Housekeeping
from herald_api.accounts.runtime import Accounts
from herald_api.accounts.service import AccountService
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

"""Accounts' internal endpoints, called by the scheduler: reminders and purges."""

from __future__ import annotations

from herald_api.accounts.deps import HousekeepingDep
from herald_api.core.errors import BODY_RESPONSES
from herald_api.core.internal import Authorized, Deleted, OlderThan, internal_router
from herald_shared.internal_api import (
    PURGE_IDEMPOTENCY_KEYS,
    PURGE_TOKENS,
    PURGE_UNVERIFIED_USERS,
    REMIND_UNVERIFIED_USERS,
    Reminded,
)

router = internal_router()


@router.post(REMIND_UNVERIFIED_USERS.path, responses=BODY_RESPONSES)
async def remind_unverified_users(
    _: Authorized, body: OlderThan, housekeeping: HousekeepingDep
) -> Reminded:
    """Email one reminder with a fresh link to each user unverified ``older_than_seconds``
    after signup and not reminded before (never twice)."""
    reminded = await housekeeping.remind_unverified(older_than=body.age)
    return Reminded(reminded=reminded)


@router.post(PURGE_UNVERIFIED_USERS.path, responses=BODY_RESPONSES)
async def purge_unverified_users(
    _: Authorized, body: OlderThan, housekeeping: HousekeepingDep
) -> Deleted:
    """Delete accounts still unverified ``older_than_seconds`` after signup, with their tokens."""
    deleted = await housekeeping.purge_unverified(older_than=body.age)
    return Deleted(deleted=deleted)


@router.post(PURGE_TOKENS.path, responses=BODY_RESPONSES)
async def purge_tokens(_: Authorized, body: OlderThan, housekeeping: HousekeepingDep) -> Deleted:
    """Delete link tokens spent or expired more than ``older_than_seconds`` ago."""
    deleted = await housekeeping.purge_tokens(older_than=body.age)
    return Deleted(deleted=deleted)


@router.post(PURGE_IDEMPOTENCY_KEYS.path, responses=BODY_RESPONSES)
async def purge_idempotency_keys(
    _: Authorized, body: OlderThan, housekeeping: HousekeepingDep
) -> Deleted:
    """Delete idempotency keys expired more than ``older_than_seconds`` ago."""
    deleted = await housekeeping.purge_idempotency_keys(older_than=body.age)
    return Deleted(deleted=deleted)

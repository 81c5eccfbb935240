"""Internal endpoints: work on the accounts database that the scheduler triggers.

The API is the only writer of the accounts database; the scheduler owns the
schedule and calls these with the shared bearer token (HERALD_INTERNAL_TOKEN).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from herald_api.accounts import housekeeping
from herald_api.core.deps import InternalAuthDep, ResourcesDep
from herald_api.core.errors import BODY_RESPONSES, require_json_body
from herald_api.core.metrics import RECONCILE_OUTCOMES
from herald_api.outbox import reconciliation
from herald_api.outbox import table as outbox

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Missing or wrong bearer token."},
    status.HTTP_404_NOT_FOUND: {"description": "Internal endpoints are off (no token set)."},
}

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)


MAX_RETENTION_SECONDS = 100 * 365 * 24 * 3600
"""100 years: far past any retention, and ``now() - interval`` stays a valid timestamp."""


class OlderThan(BaseModel):
    older_than_seconds: int = Field(
        ge=60,
        le=MAX_RETENTION_SECONDS,
        description="The age, in seconds, past which the rows concerned are acted on.",
    )

    @property
    def age(self) -> timedelta:
        return timedelta(seconds=self.older_than_seconds)


class Deleted(BaseModel):
    deleted: int = Field(description="Rows deleted.")


class Reconciled(BaseModel):
    delivered: int = Field(description="Rows settled: their message was sent.")
    skipped: int = Field(
        description="Rows settled: their job completed without sending (its link had expired)."
    )
    dead: int = Field(description="Rows settled as dead: their message is a dead letter.")
    waiting: int = Field(description="Rows whose job will still run: checked again later.")
    repushed: int = Field(description="Rows whose message Redis had lost: pushed again.")
    oldest_unsettled_seconds: float = Field(
        description="Age of the oldest row whose delivery is not confirmed yet (0: none)."
    )


RECONCILE_RESPONSES: dict[int | str, dict[str, str]] = BODY_RESPONSES | {
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "description": "Redis failed during the pass; what was done before is kept."
    }
}


class Reminded(BaseModel):
    reminded: int = Field(description="Users sent a reminder.")


async def _authorized_json(_: InternalAuthDep, request: Request) -> None:
    # The token first: a caller without it learns nothing, not even the content type.
    await require_json_body(request)


Authorized = Annotated[None, Depends(_authorized_json)]


@router.post("/outbox/purge", responses=BODY_RESPONSES)
async def purge_outbox(_: Authorized, body: OlderThan, resources: ResourcesDep) -> Deleted:
    """Delete outbox rows settled more than ``older_than_seconds`` ago; rows whose
    delivery is not confirmed (pending or relayed) stay, however old."""
    deleted = await outbox.purge(resources.sessions, older_than_seconds=body.older_than_seconds)
    return Deleted(deleted=deleted)


@router.post("/outbox/reconcile", responses=RECONCILE_RESPONSES)
async def reconcile_outbox(_: Authorized, body: OlderThan, resources: ResourcesDep) -> Reconciled:
    """Check in Redis every unsettled outbox row last known in flight more than
    ``older_than_seconds`` ago: settle the delivered, skipped and dead ones, push
    the lost ones again, leave the rest for later."""
    try:
        result = await reconciliation.reconcile(
            sessions=resources.sessions,
            queues=resources.queues,
            unchecked_for=body.age,
            batch_size=resources.settings.outbox_batch_size,
            push_timeout_seconds=resources.settings.enqueue_timeout_seconds,
            faults=resources.dispatcher.faults,
        )
    except reconciliation.ReconciliationError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Redis failed during the reconciliation: {exc}",
            headers={"Retry-After": "60"},
        ) from exc
    counts = {outcome: result.outcomes[outcome] for outcome in RECONCILE_OUTCOMES}
    return Reconciled(**counts, oldest_unsettled_seconds=result.oldest_unsettled_seconds)


@router.post("/users/remind-unverified", responses=BODY_RESPONSES)
async def remind_unverified_users(
    _: Authorized, body: OlderThan, resources: ResourcesDep
) -> Reminded:
    """Email one reminder with a fresh link to each user unverified ``older_than_seconds``
    after signup and not reminded before (never twice)."""
    settings = resources.settings
    reminded = await housekeeping.remind_unverified(
        sessions=resources.sessions,
        dispatcher=resources.dispatcher,
        older_than=body.age,
        secret=settings.link_secret,
        valid_for=timedelta(hours=settings.verification_link_hours),
    )
    return Reminded(reminded=reminded)


@router.post("/users/purge-unverified", responses=BODY_RESPONSES)
async def purge_unverified_users(
    _: Authorized, body: OlderThan, resources: ResourcesDep
) -> Deleted:
    """Delete accounts still unverified ``older_than_seconds`` after signup, with their tokens."""
    deleted = await housekeeping.purge_unverified(sessions=resources.sessions, older_than=body.age)
    return Deleted(deleted=deleted)


@router.post("/tokens/purge", responses=BODY_RESPONSES)
async def purge_tokens(_: Authorized, body: OlderThan, resources: ResourcesDep) -> Deleted:
    """Delete link tokens spent or expired more than ``older_than_seconds`` ago."""
    deleted = await housekeeping.purge_tokens(sessions=resources.sessions, older_than=body.age)
    return Deleted(deleted=deleted)

"""Internal endpoints: work on the accounts database that the scheduler triggers.

The API is the only writer of the accounts database; the scheduler owns the
schedule and calls these with the shared bearer token (HERALD_INTERNAL_TOKEN).
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from herald_api import outbox
from herald_api.api.deps import InternalAuthDep, ResourcesDep

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Missing or wrong bearer token."},
    status.HTTP_404_NOT_FOUND: {"description": "Internal endpoints are off (no token set)."},
}

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)


class OutboxPurge(BaseModel):
    older_than_seconds: int = Field(
        ge=60, description="Delete rows relayed to Redis more than this many seconds ago."
    )


class OutboxPurged(BaseModel):
    deleted: int = Field(description="Outbox rows deleted.")


@router.post("/outbox/purge")
async def purge_outbox(
    _: InternalAuthDep, body: OutboxPurge, resources: ResourcesDep
) -> OutboxPurged:
    """Delete outbox rows relayed more than ``older_than_seconds`` ago; pending rows stay."""
    deleted = await outbox.purge(resources.sessions, older_than_seconds=body.older_than_seconds)
    return OutboxPurged(deleted=deleted)

"""Internal endpoints: work on the accounts database that the scheduler triggers.

The API is the only writer of the accounts database; the scheduler owns the
schedule and calls these with the shared bearer token (HERALD_INTERNAL_TOKEN).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from herald_api import outbox
from herald_api.api.deps import InternalAuthDep, ResourcesDep
from herald_api.api.errors import BODY_RESPONSES, require_json_body

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Missing or wrong bearer token."},
    status.HTTP_404_NOT_FOUND: {"description": "Internal endpoints are off (no token set)."},
}

router = APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)


MAX_RETENTION_SECONDS = 100 * 365 * 24 * 3600
"""100 years: far past any retention, and ``now() - interval`` stays a valid timestamp."""


class OutboxPurge(BaseModel):
    older_than_seconds: int = Field(
        ge=60,
        le=MAX_RETENTION_SECONDS,
        description="Delete rows relayed to Redis more than this many seconds ago.",
    )


class OutboxPurged(BaseModel):
    deleted: int = Field(description="Outbox rows deleted.")


def _authorized_json(_: InternalAuthDep, request: Request) -> None:
    # The token first: a caller without it learns nothing, not even the content type.
    require_json_body(request)


@router.post("/outbox/purge", responses=BODY_RESPONSES)
async def purge_outbox(
    _: Annotated[None, Depends(_authorized_json)], body: OutboxPurge, resources: ResourcesDep
) -> OutboxPurged:
    """Delete outbox rows relayed more than ``older_than_seconds`` ago; pending rows stay."""
    deleted = await outbox.purge(resources.sessions, older_than_seconds=body.older_than_seconds)
    return OutboxPurged(deleted=deleted)

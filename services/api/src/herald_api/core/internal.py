"""What every internal endpoint shares: the ``/internal/v1`` router, its bearer token,
and its bodies. The scheduler calls them; the API is the accounts database's only writer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from herald_api.core.deps import InternalAuthDep
from herald_api.core.errors import require_json_body

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Missing or wrong bearer token."},
    status.HTTP_404_NOT_FOUND: {"description": "Internal endpoints are off (no token set)."},
}

MAX_RETENTION_SECONDS = 100 * 365 * 24 * 3600
"""100 years: far past any retention, and ``now() - interval`` stays a valid timestamp."""


def internal_router() -> APIRouter:
    """A router of internal endpoints (each room that has some makes its own)."""
    return APIRouter(prefix="/internal/v1", tags=["internal"], responses=AUTH_RESPONSES)


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


async def _authorized_json(_: InternalAuthDep, request: Request) -> None:
    # The token first: a caller without it learns nothing, not even the content type.
    await require_json_body(request)


Authorized = Annotated[None, Depends(_authorized_json)]

"""What every internal endpoint shares: the ``/internal/v1`` router and its bearer token.
The bodies and paths are the shared contract (``herald_shared.internal_api``), which the
scheduler calls with; the API is the accounts database's only writer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from herald_api.core.deps import InternalAuthDep
from herald_api.core.errors import UNAVAILABLE_RESPONSES, require_json_body
from herald_shared import internal_api
from herald_shared.internal_api import Deleted, OlderThan

__all__ = ["AUTH_RESPONSES", "Authorized", "Deleted", "OlderThan", "internal_router"]

AUTH_RESPONSES: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "Missing or wrong bearer token."},
    status.HTTP_404_NOT_FOUND: {"description": "Internal endpoints are off (no token set)."},
}


def internal_router() -> APIRouter:
    """A router of internal endpoints (each room that has some makes its own); each may
    be shed (503) like any route that opens a database session."""
    return APIRouter(
        prefix=internal_api.PREFIX,
        tags=["internal"],
        responses={**AUTH_RESPONSES, **UNAVAILABLE_RESPONSES},
    )


async def _authorized_json(_: InternalAuthDep, request: Request) -> None:
    # The token first: a caller without it learns nothing, not even the content type.
    await require_json_body(request)


Authorized = Annotated[None, Depends(_authorized_json)]

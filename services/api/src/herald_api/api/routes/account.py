"""The caller's own account."""

from __future__ import annotations

from fastapi import APIRouter, status

from herald_api.api.deps import CurrentUserDep
from herald_api.api.errors import DATABASE_UNAVAILABLE
from herald_api.models import UserPublic

router = APIRouter(prefix="/users", tags=["users"])


@router.get(
    "/me",
    responses={
        status.HTTP_401_UNAUTHORIZED: {
            "description": "No access token, or one that is invalid, expired, or whose user "
            "no longer exists.",
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        status.HTTP_503_SERVICE_UNAVAILABLE: {"description": DATABASE_UNAVAILABLE},
    },
)
async def read_current_user(user: CurrentUserDep) -> UserPublic:
    """The profile of the user the bearer access token was issued to."""
    return UserPublic.of(user)

"""The caller's sessions: listing them and ending one or all the others."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, status

from herald_api.auth.deps import AuthDep, CallerDep
from herald_api.auth.schemas import SessionView
from herald_api.core.errors import UNAVAILABLE_RESPONSES

router = APIRouter(prefix="/users/me/sessions", tags=["sessions"])

NO_SUCH_SESSION = "No session of yours in force has this id."

_AUTHENTICATED: dict[int | str, dict[str, str]] = {
    status.HTTP_401_UNAUTHORIZED: {"description": "A valid access token is required."},
}


@router.get("", responses={**_AUTHENTICATED, **UNAVAILABLE_RESPONSES})
async def list_own_sessions(caller: CallerDep, auth: AuthDep) -> list[SessionView]:
    """The caller's sessions in force, the most recently used first; ``current`` marks
    the one of the request's access token. No token material is shown."""
    service = auth.login_sessions
    rows = await service.list_in_force(user_id=caller.user.id)
    return [
        SessionView(
            id=row.id,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            expires_at=min(row.expires_at, row.last_used_at + service.policy.idle),
            user_agent=row.user_agent,
            client_network=row.client_network,
            current=row.id == caller.session_id,
        )
        for row in rows
    ]


@router.delete(
    "/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **_AUTHENTICATED,
        status.HTTP_404_NOT_FOUND: {"description": NO_SUCH_SESSION},
        **UNAVAILABLE_RESPONSES,
    },
)
async def end_own_session(session_id: uuid.UUID, caller: CallerDep, auth: AuthDep) -> None:
    """End one of the caller's sessions (the current one too: that is a logout). Its
    refresh token and access tokens stop working at once. 404 for an id that is not
    a session of the caller in force (another user's looks the same)."""
    ended = await auth.login_sessions.end(
        user_id=caller.user.id, session_id=session_id, reason="ended"
    )
    if not ended:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=NO_SUCH_SESSION)


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_AUTHENTICATED, **UNAVAILABLE_RESPONSES},
)
async def end_other_sessions(caller: CallerDep, auth: AuthDep) -> None:
    """End every session of the caller but the current one ("log out everywhere else")."""
    await auth.login_sessions.end_others(user_id=caller.user.id, keep=caller.session_id)

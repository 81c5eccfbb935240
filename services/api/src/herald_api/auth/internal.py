"""Auth's internal endpoint, called by the scheduler: the purge of ended sessions."""

from __future__ import annotations

from herald_api.auth.deps import AuthDep
from herald_api.auth.housekeeping import purge_sessions
from herald_api.core.errors import BODY_RESPONSES
from herald_api.core.internal import Authorized, Deleted, OlderThan, internal_router
from herald_shared.internal_api import PURGE_SESSIONS

router = internal_router()


@router.post(PURGE_SESSIONS.path, responses=BODY_RESPONSES)
async def purge_ended_sessions(_: Authorized, body: OlderThan, auth: AuthDep) -> Deleted:
    """Delete login sessions that ended more than ``older_than_seconds`` ago: revoked,
    past their absolute end, or unused for ``HERALD_SESSION_IDLE_DAYS`` by then.
    Sessions in force are never deleted."""
    service = auth.login_sessions
    deleted = await purge_sessions(service.sessions, policy=service.policy, older_than=body.age)
    return Deleted(deleted=deleted)

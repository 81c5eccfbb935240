"""Users: sign up and read."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from herald_api.api.deps import DispatcherDep, HasherDep, RequestIdDep, SessionDep
from herald_api.api.errors import BODY_RESPONSES, require_json_body
from herald_api.models import User, UserCreate, UserPublic
from herald_api.signup import EmailTakenError, sign_up

router = APIRouter(prefix="/users", tags=["users"])

EMAIL_TAKEN = "An account with this email address already exists."


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={status.HTTP_409_CONFLICT: {"description": EMAIL_TAKEN}, **BODY_RESPONSES},
    dependencies=[Depends(require_json_body)],
)
async def create_user(
    body: UserCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    hasher: HasherDep,
    dispatcher: DispatcherDep,
    request_id: RequestIdDep,
) -> UserPublic:
    """Sign up: create the account and queue its welcome email."""
    try:
        user = await sign_up(
            session=session, hasher=hasher, dispatcher=dispatcher, data=body, request_id=request_id
        )
    except EmailTakenError:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=EMAIL_TAKEN) from None
    response.headers["Location"] = request.app.url_path_for("read_user", user_id=str(user.id))
    return UserPublic.of(user)


@router.get("/{user_id}", responses={status.HTTP_404_NOT_FOUND: {"description": "No such user."}})
async def read_user(user_id: uuid.UUID, session: SessionDep) -> UserPublic:
    """One user's public profile."""
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="User not found.")
    return UserPublic.of(user)

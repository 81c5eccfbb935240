"""The versioned API routers: public (``/api/v1``) and internal (``/internal/v1``)."""

from __future__ import annotations

from fastapi import APIRouter

from herald_api.api.routes import account, internal, login, password, users, verification

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(login.router)
# Before users: no "/users/{...}" route added there can then shadow "/users/me".
api_router.include_router(account.router)
api_router.include_router(users.router)
api_router.include_router(verification.router)
api_router.include_router(password.router)

internal_router = internal.router

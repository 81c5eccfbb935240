"""The versioned API routers: public (``/api/v1``) and internal (``/internal/v1``)."""

from __future__ import annotations

from fastapi import APIRouter

from herald_api.api.routes import internal, users

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(users.router)

internal_router = internal.router

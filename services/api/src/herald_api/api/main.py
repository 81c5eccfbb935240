"""The versioned API router."""

from __future__ import annotations

from fastapi import APIRouter

from herald_api.api.routes import users

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(users.router)

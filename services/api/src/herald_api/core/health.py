"""Liveness and readiness probes. Neither waits for a password hash or a connection of
the requests' pool, so both answer at once however loaded the API is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Response, status
from sqlalchemy import text

from herald_api.core.deps import InfrastructureDep

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get(
    "/ready",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"description": "A dependency is down."}},
)
async def ready(infrastructure: InfrastructureDep, response: Response) -> dict[str, Any]:
    """PostgreSQL and Redis both answer.

    PostgreSQL is asked on a connection of the probe's own, never one of the requests'
    pool: a process shedding load (503 at once) is still ready, and taking it out of the
    load balancer would only send its share to the others.
    """
    timeout = infrastructure.settings.readiness_timeout_seconds

    async def postgres() -> None:
        async with infrastructure.probe_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await infrastructure.notifier_queue.redis.ping()  # type: ignore[attr-defined]

    checks = dict(
        zip(
            ("postgres", "redis"),
            await asyncio.gather(_probe(postgres(), timeout), _probe(redis(), timeout)),
            strict=True,
        )
    )
    healthy = all(state == "ok" for state in checks.values())
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ok" if healthy else "unavailable", "checks": checks}


async def _probe(check: Awaitable[None], limit: float) -> str:
    try:
        async with asyncio.timeout(limit):
            await check
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"

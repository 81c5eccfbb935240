"""Admission control: past a bound on queued work, a request is shed at once with 503.

Two resources are bounded: password hashes running or waiting (``auth.passwords``
raises ``OverloadedError``) and pooled database connections (SQLAlchemy's pool raises
its ``TimeoutError`` after ``HERALD_DATABASE_POOL_TIMEOUT_SECONDS``). Both become the
same answer, counted and logged here, once per shed request. Why the bounds are what
they are: docs/api.md, "Overload".
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy import exc as sa_exc

Resource = Literal["hash", "database"]

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` of a shed request: a full hash queue drains in well under a second."""

OVERLOADED = (
    "The server is busy and did nothing with this request; try again in "
    f"{RETRY_AFTER_SECONDS} second."
)

SHED = Counter(
    "herald_api_requests_shed_total",
    "Requests answered 503 at once because the work they need was past its bound, by "
    "resource (hash: password hashes running or waiting; database: pooled connections).",
    ["resource"],
)

log = structlog.get_logger(__name__)


class OverloadedError(Exception):
    """The bounded ``resource`` is full: nothing was done, the request is to be shed."""

    def __init__(self, resource: Resource) -> None:
        super().__init__(f"{resource} is at its bound")
        self.resource: Resource = resource


RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def shed(request: Request, resource: Resource) -> JSONResponse:
    """Count, log and answer one shed request."""
    SHED.labels(resource).inc()
    log.warning("admission.shed", resource=resource, method=request.method, path=request.url.path)
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": OVERLOADED},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OverloadedError)
    return shed(request, exc.resource)


async def pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    # Raised by the pool only: every connection is checked out and none came back
    # within the pool timeout. PostgreSQL itself may be fine (errors.database_unavailable
    # answers when it is not).
    assert isinstance(exc, sa_exc.TimeoutError)
    return shed(request, "database")


def install(app: FastAPI) -> None:
    """Answer ``OverloadedError`` and an exhausted pool with 503 and ``Retry-After``."""
    app.add_exception_handler(OverloadedError, overloaded)
    app.add_exception_handler(sa_exc.TimeoutError, pool_exhausted)

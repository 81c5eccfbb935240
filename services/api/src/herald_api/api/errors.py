"""Error bodies.

FastAPI's default 422 body echoes each rejected ``input``; for a signup that
would put a password in the response, so the handler drops it and keeps what
names the field and the rule.

A request that fails because PostgreSQL cannot be reached gets a 503 with
``Retry-After`` instead of a 500: the client did nothing wrong and may retry.
Its transaction never committed (the session rolled back), so nothing of it
was written.
"""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from herald_api.db import CONNECTIVITY_ERRORS, is_unavailable
from herald_api.errortext import describe

DATABASE_UNAVAILABLE = "The accounts database is unavailable; try again shortly."

log = structlog.get_logger(__name__)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {key: value for key, value in error.items() if key in {"type", "loc", "msg"}}
        for error in exc.errors()
    ]
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(errors)},
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        # Not a connectivity problem (a bad statement, a bug): the usual 500.
        raise exc
    log.warning("database.unavailable", path=request.url.path, error=describe(exc))
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": DATABASE_UNAVAILABLE},
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    for error in CONNECTIVITY_ERRORS:
        app.add_exception_handler(error, database_unavailable)

"""Error answers of every room: a 422 that never echoes its input (a password), a 503
with ``Retry-After`` when PostgreSQL is unreachable (nothing was written) or the server
is busy (``admission``), and a 4xx that says why for a body the API cannot read (413,
415, 400), never a 500.

Routes that take a body document these with ``BODY_RESPONSES``, routes that hash or use
the database ``UNAVAILABLE_RESPONSES``; the domains install handlers of their own errors
(``auth.http``: 429; ``accounts.http``: the wrong password).
"""

from __future__ import annotations

import email.message
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from herald_api.core import admission
from herald_api.core.db import CONNECTIVITY_ERRORS, is_unavailable
from herald_api.core.errortext import describe

DATABASE_UNAVAILABLE = "The accounts database is unavailable; try again shortly."

MAX_BODY_BYTES = 64 * 1024
"""The largest request body the API reads; every body it accepts is far smaller."""

BODY_TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB."
NOT_JSON = "The request body must be JSON, sent with Content-Type: application/json."
BODY_UNREADABLE = "The request body could not be decoded as JSON."
BODY_NOT_UTF8 = "The request body is not valid UTF-8."
BODY_TOO_DEEP = "The request body's JSON is nested too deeply."

FASTAPI_PARSE_ERROR = "There was an error parsing the body"
"""The detail of FastAPI's own 400 for a body it could not decode."""

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: {
        "description": "The body is not decodable JSON (not UTF-8, nested too deeply, "
        "a number too long)."
    },
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": BODY_TOO_LARGE},
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: {"description": NOT_JSON},
}
"""The answers of every route that reads a JSON body, for its ``responses=``."""

UNAVAILABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_503_SERVICE_UNAVAILABLE: {
        "description": "Nothing was done; try again after Retry-After seconds. Either the "
        "server is busy: more password hashes or database connections are waiting than "
        f'it takes on, answered at once ("{admission.OVERLOADED}"); or the accounts '
        f'database is unreachable ("{DATABASE_UNAVAILABLE}").',
        "headers": admission.RETRY_AFTER_HEADER,
    }
}
"""The answer of every route that hashes a password or opens a database session (it
may be shed, ``admission``), for its ``responses=``."""

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


async def require_json_body(request: Request) -> None:
    """415 unless a request that has a body says it is JSON (``application/json`` or ``+json``)."""
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    if not has_body:
        return  # No body: the usual 422 names the missing fields.
    message = email.message.Message()
    message["content-type"] = request.headers.get("content-type", "")
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        raise HTTPException(status_code=status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail=NOT_JSON)


def _unreadable_body_detail(exc: StarletteHTTPException) -> str | None:
    """Say why FastAPI could not parse a body (its own 400 says only that it could not)."""
    if exc.status_code == status.HTTP_413_CONTENT_TOO_LARGE:
        return BODY_TOO_LARGE
    if exc.detail != FASTAPI_PARSE_ERROR or exc.__cause__ is None:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return BODY_NOT_UTF8
    if isinstance(cause, RecursionError):
        return BODY_TOO_DEEP
    return BODY_UNREADABLE


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if (detail := _unreadable_body_detail(exc)) is not None:
        cause = exc.__cause__
        error = describe(cause) if cause is not None else detail
        log.info("request.body_unreadable", path=request.url.path, error=error)
        exc = StarletteHTTPException(status_code=exc.status_code, detail=detail)
    return await http_exception_handler(request, exc)


def install(app: FastAPI) -> None:
    """Install the handlers of validation, body, database and overload errors."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error in CONNECTIVITY_ERRORS:
        app.add_exception_handler(error, database_unavailable)
    admission.install(app)

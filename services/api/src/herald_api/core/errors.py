"""Error bodies.

FastAPI's default 422 body echoes each rejected ``input``; for a signup that
would put a password in the response, so the handler drops it and keeps what
names the field and the rule.

A request that fails because PostgreSQL cannot be reached gets a 503 with
``Retry-After`` instead of a 500: the client did nothing wrong and may retry.
Its transaction never committed (the session rolled back), so nothing of it
was written.

A request body the API cannot read gets a 4xx that says why, never a 500:
larger than ``MAX_BODY_BYTES`` (413), not JSON (415), or JSON that cannot be
decoded (400: not UTF-8, nested too deeply, a number too long). Routes that
take a body document these with ``BODY_RESPONSES``.

An attempt over a rate limit (``herald_api.ratelimit``) gets a 429 with
``Retry-After``: the seconds until the limit that refused has room again.
Routes that check a limit document it with ``RATE_LIMIT_RESPONSES``.
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

from herald_api.accounts.password_change import WrongPasswordError
from herald_api.auth import ratelimit
from herald_api.auth.ratelimit import RateLimitedError
from herald_api.core.db import CONNECTIVITY_ERRORS, is_unavailable
from herald_api.core.errortext import describe

DATABASE_UNAVAILABLE = "The accounts database is unavailable; try again shortly."

MAX_BODY_BYTES = 64 * 1024
"""The largest request body the API reads; every body it accepts is far smaller."""
WRONG_PASSWORD = "The password is not right."  # noqa: S105  # a message, no password
"""The answer (400) to a step confirmed with the account's password when it is another
one (``WrongPasswordError``)."""

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

RATE_LIMIT_RESPONSES = ratelimit.RATE_LIMIT_RESPONSES
"""The 429 of every route that checks a rate limit, for its ``responses=``."""

log = structlog.get_logger(__name__)


def too_many_attempts(retry_after: int) -> str:
    """The 429 detail for ``retry_after`` seconds."""
    unit = "second" if retry_after == 1 else "seconds"
    return f"Too many attempts; try again in {retry_after} {unit}."


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


async def rate_limited(request: Request, exc: Exception) -> JSONResponse:
    # The limiter logged and counted the refusal: a route that catches the error
    # itself (to answer alike either way) must not hide it from the metrics.
    assert isinstance(exc, RateLimitedError)
    return JSONResponse(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        content={"detail": too_many_attempts(exc.retry_after)},
        headers={"Retry-After": str(exc.retry_after)},
    )


async def wrong_password(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST, content={"detail": WRONG_PASSWORD})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RateLimitedError, rate_limited)
    app.add_exception_handler(WrongPasswordError, wrong_password)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error in CONNECTIVITY_ERRORS:
        app.add_exception_handler(error, database_unavailable)

"""Accounts' error answers that are not a route's own: the wrong password's 400, and the
answers of a request whose ``Idempotency-Key`` another request holds (a replay, 422, 409)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse, Response

from herald_api.accounts.idempotency import (
    REPLAYED_HEADER,
    AlreadyAnsweredError,
    KeyInProgressError,
    KeyReusedError,
)
from herald_api.accounts.service import WrongPasswordError

WRONG_PASSWORD = "The password is not right."  # noqa: S105  # a message, no password
"""The answer (400) to a step confirmed with the account's password when it is another
one (``WrongPasswordError``)."""


KEY_REUSED = (
    "This Idempotency-Key was already used with another request body. Send a new key "
    "with each new request, and the same body with each retry."
)
KEY_IN_PROGRESS = (
    "A request with this Idempotency-Key is still being processed. Retry it shortly to "
    "get its answer."
)


def idempotent_responses(status_code: int) -> dict[int | str, dict[str, Any]]:
    """The answers a route taking ``Idempotency-Key`` adds (``status_code``: its success)."""
    return {
        status_code: {
            "description": "Accepted; or, for a repeat of a request with its "
            "Idempotency-Key, that request's answer again.",
            "headers": {
                REPLAYED_HEADER: {
                    "description": "`true` on the stored answer to an earlier request "
                    "with the same Idempotency-Key and body (nothing was done again).",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        status.HTTP_409_CONFLICT: {
            "description": KEY_IN_PROGRESS,
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        status.HTTP_422_UNPROCESSABLE_CONTENT: {
            "description": "The body or the Idempotency-Key header is invalid (the list of "
            f"errors), or the key was used with another body within its window: {KEY_REUSED}",
        },
    }


async def wrong_password(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST, content={"detail": WRONG_PASSWORD})


async def replayed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AlreadyAnsweredError)
    return Response(
        content=exc.answer,
        status_code=exc.status_code,
        media_type="application/json",
        headers={REPLAYED_HEADER: "true"},
    )


async def key_reused(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": KEY_REUSED}
    )


async def key_in_progress(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_409_CONFLICT,
        content={"detail": KEY_IN_PROGRESS},
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    """Answer ``WrongPasswordError`` with 400, and a request whose key is taken with the
    stored answer, 422 or 409."""
    app.add_exception_handler(WrongPasswordError, wrong_password)
    app.add_exception_handler(AlreadyAnsweredError, replayed)
    app.add_exception_handler(KeyReusedError, key_reused)
    app.add_exception_handler(KeyInProgressError, key_in_progress)

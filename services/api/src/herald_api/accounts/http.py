"""Accounts' error answers that are not a route's own: the wrong password's 400."""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from herald_api.accounts.service import WrongPasswordError

WRONG_PASSWORD = "The password is not right."  # noqa: S105  # a message, no password
"""The answer (400) to a step confirmed with the account's password when it is another
one (``WrongPasswordError``)."""


async def wrong_password(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_400_BAD_REQUEST, content={"detail": WRONG_PASSWORD})


def install(app: FastAPI) -> None:
    """Answer ``WrongPasswordError`` with 400."""
    app.add_exception_handler(WrongPasswordError, wrong_password)

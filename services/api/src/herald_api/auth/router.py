"""Logging in: the OAuth2 password flow, answered with a bearer access token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import TypeAdapter, ValidationError

from herald_api.auth.deps import AuthDep, RateLimitsDep
from herald_api.auth.http import RATE_LIMIT_RESPONSES, token_response
from herald_api.auth.login import EmailNotVerifiedError, InvalidCredentialsError
from herald_api.auth.schemas import AccessToken, Email
from herald_api.core.errors import BODY_TOO_LARGE, UNAVAILABLE_RESPONSES

router = APIRouter(prefix="/auth", tags=["auth"])

INCORRECT_CREDENTIALS = "Incorrect email or password."
EMAIL_NOT_VERIFIED = "Verify your email address before logging in."

_email = TypeAdapter(Email)


LOGIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    status.HTTP_400_BAD_REQUEST: {"description": "The form body could not be parsed."},
    status.HTTP_401_UNAUTHORIZED: {
        "description": f"{INCORRECT_CREDENTIALS} The same answer, after the same work, "
        "whether the address has no account or the password is wrong.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    status.HTTP_403_FORBIDDEN: {
        "description": f"{EMAIL_NOT_VERIFIED} Only ever after the right password."
    },
    status.HTTP_413_CONTENT_TOO_LARGE: {"description": BODY_TOO_LARGE},
    **RATE_LIMIT_RESPONSES,
    **UNAVAILABLE_RESPONSES,
}


def normalised_email(username: str) -> str | None:
    """``username`` as signup stores addresses, or None if it is not an email address."""
    try:
        return _email.validate_python(username)
    except ValidationError:
        return None


@router.post("/token", responses=LOGIN_RESPONSES)
async def log_in_for_access_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    response: Response,
    limits: RateLimitsDep,
    auth: AuthDep,
) -> AccessToken:
    """Log in with the OAuth2 password flow: ``username`` is the email address.

    - Unknown address and wrong password get the same 401 with
      ``WWW-Authenticate: Bearer``, after the same argon2id work (an unknown
      address is verified against a dummy hash), so neither the answer nor its
      timing tells whether an address has an account. A ``username`` that is
      not an email address at all gets that 401 too, not a 422: it has no
      account either, and one answer for every failure leaves nothing to
      probe.
    - Unverified accounts may not log in: with the right password, an account
      whose email address was never verified gets 403. That reveals the
      account exists only to someone who already has its password.
    - A right password whose stored hash has weaker argon2id parameters than
      the current ones is rehashed and stored on the way.
    - Counts against the login rate limits, per client address and per email
      address, before any work (429 with ``Retry-After`` over either).

    The token is an HS256 JWT valid for ``expires_in`` seconds; send it as
    ``Authorization: Bearer <token>``.
    """
    email = normalised_email(form.username)
    await limits.check("login", email=email)
    try:
        issued = await auth.login.log_in(email=email, password=form.password)
    except InvalidCredentialsError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=INCORRECT_CREDENTIALS,
            headers={"WWW-Authenticate": "Bearer"},
        ) from None
    except EmailNotVerifiedError:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN, detail=EMAIL_NOT_VERIFIED
        ) from None
    return token_response(response, issued)

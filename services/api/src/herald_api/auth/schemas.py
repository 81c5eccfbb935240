"""Credential shapes: an email address, a new password, access and refresh tokens, and
the session list's rows."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, SecretStr, StringConstraints
from pydantic_core import PydanticCustomError
from sqlmodel import Field, SQLModel

from herald_api.auth.password_policy import is_common


def _ascii_local_part(address: str) -> str:
    # A non-ASCII local part needs SMTPUTF8 end to end, which relays need not
    # offer: the welcome email could never be sent. Say so at signup instead.
    if not address.rpartition("@")[0].isascii():
        raise ValueError("the part before @ must be ASCII")
    return address.lower()


Email = Annotated[EmailStr, AfterValidator(_ascii_local_part)]
"""An email address, validated and normalised (email-validator's form, lower-cased)."""


def _encodable(value: SecretStr) -> SecretStr:
    # JSON may carry a lone surrogate (\ud800) that no UTF-8 encoder, argon2's included, takes.
    try:
        value.get_secret_value().encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain lone surrogate characters") from None
    return value


def _uncommon(value: SecretStr) -> SecretStr:
    # The message never quotes the password: 422 bodies and logs must not carry it.
    if is_common(value.get_secret_value()):
        raise PydanticCustomError(
            "password_too_common",
            "is too common: it is one of the 3,000 most used passwords; choose another",
        )
    return value


Password = Annotated[
    SecretStr,
    StringConstraints(min_length=8, max_length=128),
    AfterValidator(_encodable),
    AfterValidator(_uncommon),
]
"""A new password (OWASP ASVS 5.0, 6.2): 8 to 128 characters of any kind, not a common one."""


class AccessToken(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # OAuth2's token type, no secret
    expires_in: int
    """Seconds the token is valid for."""


class TokenPairBody(AccessToken):
    """A login's or a refresh's answer: an access token and the session's refresh token."""

    refresh_token: str
    """Opaque; exchange it at ``POST /api/v1/auth/refresh`` before the access token
    expires. Each refresh answers with a new one: keep the last one only."""


class RefreshRequest(SQLModel):
    refresh_token: str = Field(min_length=1, max_length=128)


class SessionView(SQLModel):
    """One session in force, as its owner sees it (no token material)."""

    id: uuid.UUID
    created_at: datetime
    last_used_at: datetime
    """The last login or refresh."""
    expires_at: datetime
    """When it ends unless refreshed before (idle), or at the latest (absolute)."""
    user_agent: str | None
    client_network: str | None
    """The IPv4 address or IPv6 /64 it logged in from: a coarse location."""
    current: bool
    """Whether the request's access token belongs to it."""

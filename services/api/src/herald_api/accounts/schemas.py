"""The request and response bodies of the account routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints
from sqlmodel import SQLModel

from herald_api.auth.models import User
from herald_api.auth.schemas import Email, Password
from herald_shared.text import DisplayName


class UserCreate(BaseModel):
    # The password must not show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    email: Email
    password: Password
    display_name: DisplayName


class Accepted(SQLModel):
    """The answer to a request whose outcome is only told by email (signup, resend).

    The same for every outcome, so it never reveals whether the address has an account.
    """

    email: str
    detail: str


class EmailRequest(SQLModel):
    """A request about an address's account (a fresh verification link, a password reset)."""

    email: Email


class VerifyEmail(SQLModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class NewPassword(BaseModel):
    """Spend a password reset link's token on a new password."""

    # The password must not show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    password: Password


class PasswordChange(BaseModel):
    """Change the caller's password: the current one, and the new one."""

    # Neither password may show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    current_password: Annotated[SecretStr, StringConstraints(min_length=1, max_length=128)]
    new_password: Password


class EmailChange(BaseModel):
    """Move the caller's account to another address, confirmed with its password."""

    # The password must not show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    password: Annotated[SecretStr, StringConstraints(min_length=1, max_length=128)]
    new_email: Email


class PasswordConfirmation(BaseModel):
    """The caller's password, asked again before an irreversible step."""

    # The password must not show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    password: Annotated[SecretStr, StringConstraints(min_length=1, max_length=128)]


class UserPublic(SQLModel):
    id: uuid.UUID
    email: str
    display_name: str
    created_at: datetime
    email_verified: bool

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            created_at=user.created_at,
            email_verified=user.email_verified_at is not None,
        )

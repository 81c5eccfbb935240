"""The request and response bodies of the account routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator
from sqlmodel import Field as ModelField
from sqlmodel import SQLModel

from herald_api.auth.models import User
from herald_api.auth.schemas import Email, Password
from herald_shared.locales import LocaleTag
from herald_shared.text import DisplayName


class UserCreate(BaseModel):
    # The password must not show in the text of a validation error, wherever it is logged.
    model_config = ConfigDict(hide_input_in_errors=True)

    email: Email
    password: Password
    display_name: DisplayName
    locale: LocaleTag | None = Field(
        default=None,
        description="The user's language as a BCP 47 tag (`de`, `pt-BR`), stored as given: "
        "emails and pages fall back from it to a language Herald has (`pt-BR` → `pt` → `en`). "
        "Unset: the request's Accept-Language (its most wanted tag that is a known locale), "
        "else `en`.",
        examples=["de"],
    )


class ProfileUpdate(BaseModel):
    """Change the caller's display name and/or language: at least one of them."""

    display_name: DisplayName | None = None
    locale: LocaleTag | None = Field(
        default=None,
        description="BCP 47 tag (`de`, `pt-BR`); the emails staged from now on use it.",
    )

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if self.display_name is None and self.locale is None:
            raise ValueError("give display_name, locale or both")
        return self


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
    locale: str = ModelField(description="The user's language, a BCP 47 tag as they gave it.")

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            created_at=user.created_at,
            email_verified=user.email_verified_at is not None,
            locale=user.locale,
        )


class AddressVerified(UserPublic):
    """A first use of an address link: the user as it is now."""

    status: Literal["verified", "email_changed"] = ModelField(
        description="`verified`: a verification link verified the address; `email_changed`: "
        "an email change link moved the account to the address it was sent to."
    )


class AlreadyVerified(SQLModel):
    """A genuine address link used again (or expired) whose work is done: the address
    is verified, or the change it confirms is made. No personal data: whoever holds an
    old link learns nothing about the account."""

    status: Literal["already_verified"]
    detail: str


VerifyAnswer = Annotated[AddressVerified | AlreadyVerified, Field(discriminator="status")]
"""The 200 of ``POST /api/v1/auth/verify``, told apart by ``status``."""

"""The accounts schema (tables) and the API's request/response shapes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, SecretStr, StringConstraints
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from herald_api.auth.password_policy import is_common
from herald_shared.text import DisplayName


def _utcnow() -> datetime:
    return datetime.now(UTC)


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


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        # Reminders and purges look for unverified users by age.
        Index(
            "users_unverified_idx", "created_at", postgresql_where=text("email_verified_at IS NULL")
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(sa_column=Column(String(254), nullable=False, unique=True))
    display_name: str = Field(sa_column=Column(String(100), nullable=False))
    password_hash: str = Field(sa_column=Column(String(255), nullable=False))
    created_at: datetime = Field(
        default_factory=_utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    email_verified_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    verification_reminded_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    token_version: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    """Carried by every access token (claim ``ver``); a password change raises it, so
    the tokens issued before stop working."""


class EmailToken(SQLModel, table=True):
    """A link token sent by email, stored only as its SHA-256 fingerprint.

    Bound to one user and one purpose; spent once (``used_at``); dead after
    ``expires_at``. See ``herald_shared.tokens`` for how the token itself is
    derived (and why it never travels through the queue).
    """

    __tablename__ = "email_tokens"
    __table_args__ = (Index("email_tokens_user_idx", "user_id", "purpose"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    purpose: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = Field(
        default_factory=_utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    new_email: str | None = Field(default=None, sa_column=Column(String(254), nullable=True))
    """For purpose ``change_email``: the address the link confirms."""


class OutboxMessage(SQLModel, table=True):
    """A queue message staged in the transaction that caused it (the transactional outbox).

    Written with the change that causes it, in one transaction; pushed to Redis
    by the fast path right after commit or, failing that, by the relay
    (``herald_api.relay``). ``relayed_at`` is set only after SAQ took the job.
    The row is the ledger of its message: it is settled (``settled_at``,
    ``settled_as``) only once the reconciliation (``herald_api.reconciliation``)
    read its delivery, or its dead letter, in Redis; until then it is never purged.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # The relay's only question: which pending rows may be pushed now.
        Index("outbox_pending_idx", "available_at", postgresql_where=text("relayed_at IS NULL")),
        # The reconciliation's: which unsettled rows were last known in flight long ago.
        Index(
            "outbox_unchecked_idx",
            "checked_at",
            postgresql_where=text("settled_at IS NULL AND checked_at IS NOT NULL"),
        ),
        # Its gauge's: how old the oldest unsettled row is.
        Index("outbox_unsettled_idx", "created_at", postgresql_where=text("settled_at IS NULL")),
        # The purge's: which rows were settled long ago.
        Index("outbox_settled_idx", "settled_at", postgresql_where=text("settled_at IS NOT NULL")),
        CheckConstraint(
            "(settled_at IS NULL) = (settled_as IS NULL) "
            "AND settled_as IN ('delivered', 'dead', 'skipped')",
            name="outbox_settled_as_check",
        ),
    )

    message_id: uuid.UUID = Field(primary_key=True)
    task: str = Field(sa_column=Column(Text, nullable=False))
    queue: str = Field(sa_column=Column(Text, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(
        default_factory=_utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    available_at: datetime = Field(
        default_factory=_utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    attempts: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    relayed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    checked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    """When the message was last known in flight: its push, or the reconciliation's last look."""
    settled_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    settled_as: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    """``delivered``, ``dead`` (a dead letter) or ``skipped`` (completed unsent: link expired)."""
    repushes: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    """How often the reconciliation pushed the message again (Redis had lost it)."""


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


class AccessToken(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # OAuth2's token type, no secret
    expires_in: int
    """Seconds the token is valid for."""


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

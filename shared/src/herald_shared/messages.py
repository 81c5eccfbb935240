"""Versioned messages that cross a queue.

Every message is a frozen pydantic model with a ``schema_version`` literal.
Messages carry identifiers and what the consumer needs to act, never a
password, hash or token: an emailed link carries a token *id*, from which
only a holder of ``HERALD_LINK_SECRET`` can derive the token
(``herald_shared.tokens``).

A consumer keeps decoding every version it lists in ``SUPPORTED_VERSIONS``
for as long as producers of it may still have messages in flight.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    model_validator,
)

from herald_shared.locales import DEFAULT_LOCALE, LocaleTag
from herald_shared.text import DisplayName, UserAgent
from herald_shared.tokens import TokenId

__all__ = [
    "AccountEmail",
    "AccountExistsEmail",
    "EmailChangeEmail",
    "EmailChangedEmail",
    "EmailLink",
    "Message",
    "MessageError",
    "PasswordChangedEmail",
    "PasswordResetEmail",
    "SessionReuseEmail",
    "VerificationEmail",
    "WelcomeEmail",
]


class MessageError(ValueError):
    """A payload that is not a valid message of the expected type and version."""

    def __init__(self, message_type: str, problems: list[str]) -> None:
        self.message_type = message_type
        self.problems = problems
        super().__init__(f"invalid {message_type}: " + "; ".join(problems))


class Message(BaseModel):
    """Base of every queue message."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})

    schema_version: int
    message_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Unique per message; the idempotency key of its delivery.",
    )

    @classmethod
    def decode(cls, payload: object) -> Self:
        """Validate ``payload`` (a dict from the queue) as this message type.

        Raises ``MessageError`` naming the message type and each bad field; an
        unknown ``schema_version`` is reported as such, before any other field.
        """
        name = cls.__name__
        if not isinstance(payload, dict):
            raise MessageError(name, [f"payload must be an object, got {type(payload).__name__}"])
        version = payload.get("schema_version")
        if version not in cls.SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in sorted(cls.SUPPORTED_VERSIONS))
            raise MessageError(
                name, [f"schema_version: unsupported version {version!r} (supported: {supported})"]
            )
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise MessageError(name, _describe(exc)) from None

    def encode(self) -> dict[str, Any]:
        """The JSON-ready dict that goes onto the queue."""
        return self.model_dump(mode="json")


def _describe(exc: ValidationError) -> list[str]:
    # Never echo the offending input: a malformed payload may hold anything.
    return [
        f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EmailLink(BaseModel):
    """A link to put in an email (verification, password reset): its token id and
    expiry. The token is derived from the id (``herald_shared.tokens``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_id: TokenId
    expires_at: AwareDatetime


class AccountEmail(Message):
    """Fields of every email to an account holder.

    ``locale`` (the reader's BCP 47 tag, ``herald_shared.locales``) is part of
    each type from its version ``LOCALE_SINCE``; older versions have none and
    mean English.
    """

    LOCALE_SINCE: ClassVar[int] = 2

    user_id: uuid.UUID
    email: EmailStr
    display_name: DisplayName
    requested_at: AwareDatetime = Field(default_factory=_utcnow)
    request_id: str | None = Field(
        default=None, max_length=200, description="The HTTP request that caused this message."
    )
    locale: LocaleTag | None = Field(
        default=None, description="The reader's language (BCP 47), from LOCALE_SINCE."
    )

    @model_validator(mode="after")
    def _locale_from_its_version(self) -> Self:
        if self.schema_version >= self.LOCALE_SINCE and self.locale is None:
            raise ValueError(f"locale: required from schema_version {self.LOCALE_SINCE}")
        if self.schema_version < self.LOCALE_SINCE and self.locale is not None:
            raise ValueError(f"locale: not part of schema_version {self.schema_version}")
        return self

    @property
    def reader_locale(self) -> str:
        """The locale the email is written for: ``locale``, or English for versions
        from before locales."""
        return self.locale or DEFAULT_LOCALE


class WelcomeEmail(AccountEmail):
    """Welcome a newly signed-up user and ask them to verify their address.

    Version 1 (before email verification) had no link; the notifier still
    sends those, without one. Version 3 added the reader's locale.
    """

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2, 3})
    LOCALE_SINCE: ClassVar[int] = 3

    schema_version: Literal[1, 2, 3] = 3
    verification: EmailLink | None = None

    @model_validator(mode="after")
    def _link_from_version_2(self) -> Self:
        if self.schema_version >= 2 and self.verification is None:
            raise ValueError("verification: required from schema_version 2")
        if self.schema_version == 1 and self.verification is not None:
            raise ValueError("verification: not part of schema_version 1")
        return self


class VerificationEmail(AccountEmail):
    """Send a fresh verification link: asked for by the user, or a reminder."""

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2
    verification: EmailLink
    reason: Literal["requested", "reminder"]


class AccountExistsEmail(AccountEmail):
    """Tell an account holder that someone tried to sign up with their address.

    Sent instead of a second welcome, so the signup answer never reveals
    whether an address has an account (ASVS 6.3.8).
    """

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2


class PasswordResetEmail(AccountEmail):
    """Send a link that sets a new password (asked for with "forgot password").

    Only ever sent to an address that has an account; the request's answer is
    the same either way.
    """

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2
    reset: EmailLink


class PasswordChangedEmail(AccountEmail):
    """Tell an account holder that their password was just changed (ASVS 6.3.7),
    so a change they did not make does not go unnoticed."""

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2


class EmailChangeEmail(AccountEmail):
    """Ask the account holder to confirm a new address for their account.

    Sent to the new address (``email``); the account keeps its old one until
    the link is opened.
    """

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2
    confirmation: EmailLink


class EmailChangedEmail(AccountEmail):
    """Tell the account's previous address (``email``) that the account moved to
    another one, so a change its owner did not make does not go unnoticed."""

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1, 2})

    schema_version: Literal[1, 2] = 2


class SessionReuseEmail(AccountEmail):
    """Tell an account holder that a replaced refresh token of one of their sessions
    was used again, so that session was ended (reuse detection, RFC 9700 §4.14).

    Someone else may hold a copy of that session's tokens: the email says which
    session (when it started, its browser or app, its network) and what to do.
    A type born with locales: version 1 carries one.
    """

    SUPPORTED_VERSIONS: ClassVar[frozenset[int]] = frozenset({1})
    LOCALE_SINCE: ClassVar[int] = 1

    schema_version: Literal[1] = 1
    session_started_at: AwareDatetime
    user_agent: UserAgent | None = Field(
        default=None, description="The session's browser or app, as it said."
    )
    client_network: str | None = Field(
        default=None,
        max_length=64,
        description="Where the session started: an IPv4 address or an IPv6 /64.",
    )

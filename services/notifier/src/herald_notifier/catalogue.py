"""The notifier's emails, one row per kind: which task (and so which message
type) it answers, its templates, its subject, and the link it carries.

The worker registers one consumer per row, the handler and the renderer read
the row of the message at hand. Adding an email is one row here and its two
templates, ``templates/{template}.txt.j2`` and ``templates/{template}.html.j2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from herald_shared.messages import (
    AccountEmail,
    AccountExistsEmail,
    EmailChangedEmail,
    EmailChangeEmail,
    EmailLink,
    PasswordChangedEmail,
    PasswordResetEmail,
    VerificationEmail,
    WelcomeEmail,
)
from herald_shared.tasks import (
    SEND_ACCOUNT_EXISTS_EMAIL,
    SEND_EMAIL_CHANGE_EMAIL,
    SEND_EMAIL_CHANGED_EMAIL,
    SEND_PASSWORD_CHANGED_EMAIL,
    SEND_PASSWORD_RESET_EMAIL,
    SEND_VERIFICATION_EMAIL,
    SEND_WELCOME_EMAIL,
    Task,
)
from herald_shared.tokens import Purpose

__all__ = [
    "CATALOGUE",
    "SUBJECTS",
    "EmailKind",
    "format_time",
    "kind_of",
    "link_of",
]

E = TypeVar("E", bound=AccountEmail)

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _no_context(message: AccountEmail) -> dict[str, Any]:
    return {}


def _no_variant(message: AccountEmail) -> str | None:
    return None


@dataclass(frozen=True, kw_only=True)
class EmailKind(Generic[E]):
    """One kind of email: the row of its message type."""

    task: Task[E]
    """The contract's task carrying the message (its type: ``message``)."""
    template: str
    """The name of its templates (``{template}.txt.j2``, ``{template}.html.j2``)."""
    subject: str
    link: Callable[[E], EmailLink | None] | None = None
    """The link the email carries, if any (``None``: never one)."""
    purpose: Purpose | None = None
    """What the link's token is derived for (and so which page it opens)."""
    context: Callable[[E], dict[str, Any]] = _no_context
    """What the templates are given besides the display name and the link."""
    variants: Mapping[str, str] = field(default_factory=dict)
    """Other subjects by variant name (``variant`` picks one per message)."""
    variant: Callable[[E], str | None] = _no_variant

    @property
    def message(self) -> type[E]:
        """The message type this row answers."""
        return self.task.message

    def link_of(self, message: E) -> EmailLink | None:
        """The link ``message``'s email carries, if any."""
        return self.link(message) if self.link is not None else None

    def subject_of(self, message: E) -> str:
        """The subject of ``message``'s email: its variant's, else the row's."""
        variant = self.variant(message)
        return self.variants[variant] if variant is not None else self.subject


def format_time(moment: datetime) -> str:
    """``moment`` in UTC, as an email says it: ``30 Nov 2026 10:00 UTC``.

    Month names are spelled here, not by ``strftime``, whose ``%b`` follows
    the process locale.
    """
    utc = moment.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year} {utc.hour:02d}:{utc.minute:02d} UTC"


def _changed_at(message: PasswordChangedEmail | EmailChangedEmail) -> dict[str, Any]:
    return {"changed_at": format_time(message.requested_at)}


def _reminder(message: VerificationEmail) -> str | None:
    return "reminder" if message.reason == "reminder" else None


CATALOGUE: tuple[EmailKind[Any], ...] = (
    EmailKind[WelcomeEmail](
        task=SEND_WELCOME_EMAIL,
        template="welcome",
        subject="Welcome to Herald",
        # Version 1, from before verification links, has none.
        link=lambda message: message.verification,
        purpose="verify_email",
    ),
    EmailKind[VerificationEmail](
        task=SEND_VERIFICATION_EMAIL,
        template="verification",
        subject="Verify your email address for Herald",
        link=lambda message: message.verification,
        purpose="verify_email",
        context=lambda message: {"reminder": _reminder(message) is not None},
        variants={"reminder": "Reminder: verify your email address for Herald"},
        variant=_reminder,
    ),
    EmailKind[AccountExistsEmail](
        task=SEND_ACCOUNT_EXISTS_EMAIL,
        template="account_exists",
        subject="Someone tried to sign up for Herald with your address",
    ),
    EmailKind[PasswordResetEmail](
        task=SEND_PASSWORD_RESET_EMAIL,
        template="password_reset",
        subject="Reset your Herald password",
        link=lambda message: message.reset,
        purpose="reset_password",
    ),
    EmailKind[PasswordChangedEmail](
        task=SEND_PASSWORD_CHANGED_EMAIL,
        template="password_changed",
        subject="Your Herald password was changed",
        context=_changed_at,
    ),
    EmailKind[EmailChangeEmail](
        task=SEND_EMAIL_CHANGE_EMAIL,
        template="email_change",
        subject="Confirm your new email address for Herald",
        link=lambda message: message.confirmation,
        # The verify page posts either token to the API's verify endpoint.
        purpose="change_email",
    ),
    EmailKind[EmailChangedEmail](
        task=SEND_EMAIL_CHANGED_EMAIL,
        template="email_changed",
        subject="Your Herald email address was changed",
        context=_changed_at,
    ),
)
"""Every email the notifier sends (sent to ``message.email``: for an email
change, the new address; for "email changed", the previous one)."""

_BY_MESSAGE: dict[type[AccountEmail], EmailKind[Any]] = {kind.message: kind for kind in CATALOGUE}

SUBJECTS: dict[str, str] = {
    name: subject
    for kind in CATALOGUE
    for name, subject in (
        (kind.template, kind.subject),
        *((f"{kind.template}_{variant}", text) for variant, text in kind.variants.items()),
    )
}
"""Every subject, by name: its template's, or a variant's (``verification_reminder``)."""


def kind_of(message: AccountEmail) -> EmailKind[Any]:
    """The row of ``message``'s type; ``TypeError`` if no email answers it."""
    kind = _BY_MESSAGE.get(type(message))
    if kind is None:
        raise TypeError(f"no email for {type(message).__name__}")
    return kind


def link_of(message: AccountEmail) -> EmailLink | None:
    """The link ``message``'s email carries, if any: the verification link of a
    welcome (from schema version 2) or a verification email, the reset link of
    a password reset, the confirmation link of an email change."""
    return kind_of(message).link_of(message)

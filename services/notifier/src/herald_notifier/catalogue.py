"""The notifier's emails, one row per kind: which task (and so which message
type) it answers, its templates, its subject, and the link it carries.

The worker registers one consumer per row, the handler and the renderer read
the row of the message at hand. Adding an email is one row here and its two
templates, ``templates/{template}.txt.j2`` and ``templates/{template}.html.j2``,
and their texts translated in ``locales/`` (``make i18n``).

Subjects are English source strings marked with ``N_`` for extraction; the
renderer translates them into the reader's language and fills in
``%(product)s`` (``HERALD_BRAND_NAME``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from babel import Locale
from babel.dates import format_date
from babel.dates import format_time as format_clock

from herald_shared.messages import (
    AccountEmail,
    AccountExistsEmail,
    EmailChangedEmail,
    EmailChangeEmail,
    EmailLink,
    PasswordChangedEmail,
    PasswordResetEmail,
    SessionReuseEmail,
    VerificationEmail,
    WelcomeEmail,
)
from herald_shared.tasks import (
    SEND_ACCOUNT_EXISTS_EMAIL,
    SEND_EMAIL_CHANGE_EMAIL,
    SEND_EMAIL_CHANGED_EMAIL,
    SEND_PASSWORD_CHANGED_EMAIL,
    SEND_PASSWORD_RESET_EMAIL,
    SEND_SESSION_REUSE_EMAIL,
    SEND_VERIFICATION_EMAIL,
    SEND_WELCOME_EMAIL,
    Task,
)
from herald_shared.tokens import Purpose

__all__ = [
    "CATALOGUE",
    "N_",
    "SUBJECTS",
    "EmailKind",
    "format_time",
    "kind_of",
    "link_of",
]

E = TypeVar("E", bound=AccountEmail)


def N_(message: str) -> str:  # noqa: N802 (gettext's name for a marker)
    """Mark ``message`` for extraction into the catalogue; translated at render."""
    return message


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
    """The subject's source string (``N_``-marked, with ``%(product)s``)."""
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


def format_time(moment: datetime, *, locale: str) -> str:
    """``moment`` in UTC as a reader of ``locale`` says it, to the minute, with the
    zone: ``November 30, 2026, 10:00 AM UTC``, ``30. November 2026, 10:00 UTC``.

    CLDR's long date and short time, joined by the locale's own pattern for
    long date-times (Babel's ``long`` date-time would add the seconds). CLDR's
    narrow no-break space (``10:00\u202fAM``) becomes a plain one: not every
    mail client's font has it, and a plain-text reader sees it as a space.
    """
    utc = moment.astimezone(UTC)
    cldr = Locale.parse(locale, sep="-")
    date = format_date(utc, "long", locale=cldr)
    clock = format_clock(utc, f"{cldr.time_formats['short'].pattern} z", tzinfo=UTC, locale=cldr)
    pattern = str(cldr.datetime_formats["long"]).replace("'", "")
    said = pattern.replace("{1}", date).replace("{0}", clock)
    return said.replace("\u202f", " ")


def _changed_at(message: PasswordChangedEmail | EmailChangedEmail) -> dict[str, Any]:
    # Formatted by the renderer, in the reader's language.
    return {"changed_at": message.requested_at}


def _reused_session(message: SessionReuseEmail) -> dict[str, Any]:
    # The client's own words (its User-Agent) and network: autoescaped in the HTML.
    return {
        "detected_at": message.requested_at,
        "started_at": message.session_started_at,
        "device": message.user_agent,
        "network": message.client_network,
    }


def _reminder(message: VerificationEmail) -> str | None:
    return "reminder" if message.reason == "reminder" else None


CATALOGUE: tuple[EmailKind[Any], ...] = (
    EmailKind[WelcomeEmail](
        task=SEND_WELCOME_EMAIL,
        template="welcome",
        subject=N_("Welcome to %(product)s"),
        # Version 1, from before verification links, has none.
        link=lambda message: message.verification,
        purpose="verify_email",
    ),
    EmailKind[VerificationEmail](
        task=SEND_VERIFICATION_EMAIL,
        template="verification",
        subject=N_("Verify your email address for %(product)s"),
        link=lambda message: message.verification,
        purpose="verify_email",
        context=lambda message: {"reminder": _reminder(message) is not None},
        variants={"reminder": N_("Reminder: verify your email address for %(product)s")},
        variant=_reminder,
    ),
    EmailKind[AccountExistsEmail](
        task=SEND_ACCOUNT_EXISTS_EMAIL,
        template="account_exists",
        subject=N_("Someone tried to sign up for %(product)s with your address"),
    ),
    EmailKind[PasswordResetEmail](
        task=SEND_PASSWORD_RESET_EMAIL,
        template="password_reset",
        subject=N_("Reset your %(product)s password"),
        link=lambda message: message.reset,
        purpose="reset_password",
    ),
    EmailKind[PasswordChangedEmail](
        task=SEND_PASSWORD_CHANGED_EMAIL,
        template="password_changed",
        subject=N_("Your %(product)s password was changed"),
        context=_changed_at,
    ),
    EmailKind[EmailChangeEmail](
        task=SEND_EMAIL_CHANGE_EMAIL,
        template="email_change",
        subject=N_("Confirm your new email address for %(product)s"),
        link=lambda message: message.confirmation,
        # The verify page posts either token to the API's verify endpoint.
        purpose="change_email",
    ),
    EmailKind[EmailChangedEmail](
        task=SEND_EMAIL_CHANGED_EMAIL,
        template="email_changed",
        subject=N_("Your %(product)s email address was changed"),
        context=_changed_at,
    ),
    EmailKind[SessionReuseEmail](
        task=SEND_SESSION_REUSE_EMAIL,
        template="session_reuse",
        subject=N_("A %(product)s session was signed out for your safety"),
        context=_reused_session,
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
"""Every subject's source string, by name: its template's, or a variant's
(``verification_reminder``)."""


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

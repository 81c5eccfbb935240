"""Valid queue messages for tests, with whatever a test does not care about filled in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import SecretStr

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
from herald_shared.tokens import Purpose, derive, new_token_id

LINK_SECRET = SecretStr("herald-test-link-secret-never-use-it-anywhere-else")
"""A ``HERALD_LINK_SECRET`` for tests (at least 32 characters, as the settings ask)."""


def verification_link(*, valid_for: timedelta = timedelta(hours=48)) -> EmailLink:
    """A link with a fresh token id, expiring ``valid_for`` from now."""
    return EmailLink(token_id=new_token_id(), expires_at=datetime.now(UTC) + valid_for)


def link_token(
    link: EmailLink, secret: SecretStr = LINK_SECRET, *, purpose: Purpose = "verify_email"
) -> str:
    """The token an email carries for ``link``, as the notifier derives it."""
    return derive(secret, token_id=link.token_id, purpose=purpose)


def emailed_token(message: AccountEmail) -> str | None:
    """The token of the link ``message``'s email carries (derived for the link's
    purpose, with ``LINK_SECRET``), or None for an email without a link."""
    if isinstance(message, PasswordResetEmail):
        return link_token(message.reset, purpose="reset_password")
    if isinstance(message, EmailChangeEmail):
        return link_token(message.confirmation, purpose="change_email")
    link: EmailLink | None = getattr(message, "verification", None)
    return None if link is None else link_token(link)


def _account_fields() -> dict[str, Any]:
    """The fields of every account email of its current version (English)."""
    return _unlocalized_fields() | {"locale": "en"}


def _unlocalized_fields() -> dict[str, Any]:
    return {"user_id": uuid.uuid4(), "email": "ada@example.com", "display_name": "Ada"}


def welcome_email(**fields: Any) -> WelcomeEmail:
    """A current-version ``WelcomeEmail``; ``fields`` override the defaults."""
    defaults = _account_fields() | {"verification": verification_link()}
    return WelcomeEmail(**(defaults | fields))


def welcome_email_v1(**fields: Any) -> WelcomeEmail:
    """A ``WelcomeEmail`` of schema version 1 (from before verification links)."""
    return WelcomeEmail(**(_unlocalized_fields() | {"schema_version": 1} | fields))


def welcome_email_v2(**fields: Any) -> WelcomeEmail:
    """A ``WelcomeEmail`` of schema version 2 (a link, from before locales: English)."""
    defaults = _unlocalized_fields() | {"schema_version": 2, "verification": verification_link()}
    return WelcomeEmail(**(defaults | fields))


def verification_email(**fields: Any) -> VerificationEmail:
    """A ``VerificationEmail`` (reason ``requested`` unless overridden)."""
    defaults = _account_fields() | {"verification": verification_link(), "reason": "requested"}
    return VerificationEmail(**(defaults | fields))


def account_exists_email(**fields: Any) -> AccountExistsEmail:
    """An ``AccountExistsEmail``; ``fields`` override the defaults."""
    return AccountExistsEmail(**(_account_fields() | fields))


def password_reset_email(**fields: Any) -> PasswordResetEmail:
    """A ``PasswordResetEmail`` with a link valid for an hour; ``fields`` override."""
    defaults = _account_fields() | {"reset": verification_link(valid_for=timedelta(hours=1))}
    return PasswordResetEmail(**(defaults | fields))


def password_changed_email(**fields: Any) -> PasswordChangedEmail:
    """A ``PasswordChangedEmail``; ``fields`` override the defaults."""
    return PasswordChangedEmail(**(_account_fields() | fields))


def email_change_email(**fields: Any) -> EmailChangeEmail:
    """An ``EmailChangeEmail`` to the new address, its link valid for 48 h."""
    defaults = _account_fields() | {
        "email": "ada.new@example.com",
        "confirmation": verification_link(),
    }
    return EmailChangeEmail(**(defaults | fields))


def email_changed_email(**fields: Any) -> EmailChangedEmail:
    """An ``EmailChangedEmail`` to the previous address; ``fields`` override."""
    return EmailChangedEmail(**(_account_fields() | fields))


def session_reuse_email(**fields: Any) -> SessionReuseEmail:
    """A ``SessionReuseEmail`` about a session started a day ago on a phone."""
    defaults = _account_fields() | {
        "session_started_at": datetime.now(UTC) - timedelta(days=1),
        "user_agent": "Mozilla/5.0 (Android 15; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
        "client_network": "2001:db8:4:2::/64",
    }
    return SessionReuseEmail(**(defaults | fields))


EMAILS: dict[str, Callable[..., AccountEmail]] = {
    "welcome": welcome_email,
    "verification": verification_email,
    "account_exists": account_exists_email,
    "password_reset": password_reset_email,
    "password_changed": password_changed_email,
    "email_change": email_change_email,
    "email_changed": email_changed_email,
    "session_reuse": session_reuse_email,
}
"""A maker of a valid message of each kind of email, by the name of its template."""

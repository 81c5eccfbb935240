"""``herald-notifier preview``: every email as a designer looks at it, from sample data.

Writes ``{kind}.{locale}.eml`` (the message as the relay would receive it: open
it in a mail client) and ``{kind}.{locale}.html`` (its HTML part: open it in a
browser) for a kind of the catalogue (``SUBJECTS``' names, e.g. ``welcome`` or
``verification_reminder``) or ``all``, in one locale or every one of
``LOCALES``. Needs no Redis, relay or configuration: the brand, sender and
pages come from the environment when set (``HERALD_BRAND_*``, ``HERALD_MAIL_FROM``,
``HERALD_VERIFY_URL``...), and the links use a sample secret unless
``HERALD_LINK_SECRET`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from herald_notifier.catalogue import SUBJECTS
from herald_notifier.render import Renderer
from herald_notifier.settings import Settings
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

__all__ = ["KINDS", "SAMPLE_LINK_SECRET", "sample_message", "write_previews"]

SAMPLE_LINK_SECRET = SecretStr("herald-preview-sample-link-secret-not-for-production")
"""Derives the sample links' tokens when HERALD_LINK_SECRET is unset (they open nothing)."""

_NOW = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
_TOKEN_ID = "preview-sample-token-id"  # noqa: S105 (an id, not a secret: it opens nothing)


def _link(valid_for: timedelta) -> EmailLink:
    return EmailLink(token_id=_TOKEN_ID, expires_at=_NOW + valid_for)


_MAKERS: dict[str, Callable[[dict[str, Any]], AccountEmail]] = {
    "welcome": lambda fields: WelcomeEmail(verification=_link(timedelta(hours=48)), **fields),
    "verification": lambda fields: VerificationEmail(
        verification=_link(timedelta(hours=48)), reason="requested", **fields
    ),
    "verification_reminder": lambda fields: VerificationEmail(
        verification=_link(timedelta(hours=48)), reason="reminder", **fields
    ),
    "account_exists": lambda fields: AccountExistsEmail(**fields),
    "password_reset": lambda fields: PasswordResetEmail(reset=_link(timedelta(hours=1)), **fields),
    "password_changed": lambda fields: PasswordChangedEmail(**fields),
    "email_change": lambda fields: EmailChangeEmail(
        confirmation=_link(timedelta(hours=48)), **(fields | {"email": "ada.new@example.com"})
    ),
    "email_changed": lambda fields: EmailChangedEmail(**fields),
    "session_reuse": lambda fields: SessionReuseEmail(
        session_started_at=_NOW - timedelta(days=3, hours=2),
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        client_network="2001:db8:4:2::/64",
        **fields,
    ),
}

KINDS: tuple[str, ...] = tuple(SUBJECTS)
"""Every kind ``preview`` knows: each subject of the catalogue, variants included."""


def sample_message(kind: str, *, locale: str) -> AccountEmail:
    """A message of ``kind`` (one of ``KINDS``) to Ada Lovelace, in ``locale``."""
    fields: dict[str, Any] = {
        "message_id": uuid.UUID(int=0),
        "user_id": uuid.UUID(int=1),
        "email": "ada@example.com",
        "display_name": "Ada Lovelace",
        "requested_at": _NOW,
        "locale": locale,
    }
    return _MAKERS[kind](fields)


def preview_renderer() -> Renderer:
    """A renderer configured from the environment where it says something, else
    from the defaults, with the sample link secret if none is set."""
    overrides: dict[str, Any] = {}
    if not os.environ.get("HERALD_LINK_SECRET"):
        overrides["link_secret"] = SAMPLE_LINK_SECRET
    settings = Settings(**overrides)
    return Renderer(
        settings.sender,
        link_secret=settings.link_secret,
        verify_url=str(settings.verify_url),
        reset_url=str(settings.reset_url),
        brand=settings.brand,
    )


def write_previews(
    *, kinds: list[str], locales: list[str], out: Path, renderer: Renderer
) -> list[Path]:
    """Write the ``.eml`` and ``.html`` of every kind in ``kinds`` for every locale
    of ``locales`` into ``out`` (made if missing); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in kinds:
        for locale in locales:
            email = renderer.render(sample_message(kind, locale=locale), now=_NOW)
            html = email.message().get_body(("html",))
            assert html is not None  # every email has its HTML part
            eml = out / f"{kind}.{locale}.eml"
            page = out / f"{kind}.{locale}.html"
            eml.write_bytes(email.data)
            # The part as a browser opens a file: the SMTP policy's CRLF as \n.
            page.write_text(html.get_content().replace("\r\n", "\n"), encoding="utf-8")
            written += [eml, page]
    return written

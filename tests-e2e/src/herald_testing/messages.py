"""Valid queue messages for tests, with whatever a test does not care about filled in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from herald_shared.messages import VerificationLink, WelcomeEmail
from herald_shared.tokens import new_token_id


def verification_link(*, valid_for: timedelta = timedelta(hours=48)) -> VerificationLink:
    """A link with a fresh token id, expiring ``valid_for`` from now."""
    return VerificationLink(token_id=new_token_id(), expires_at=datetime.now(UTC) + valid_for)


def welcome_email(**fields: Any) -> WelcomeEmail:
    """A current-version ``WelcomeEmail``; ``fields`` override the defaults."""
    defaults: dict[str, Any] = {
        "user_id": uuid.uuid4(),
        "email": "ada@example.com",
        "display_name": "Ada",
        "verification": verification_link(),
    }
    return WelcomeEmail(**(defaults | fields))

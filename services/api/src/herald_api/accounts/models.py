"""The link tokens table: emailed links, stored only as their fingerprints."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlmodel import Field, SQLModel, col

from herald_api.core.db import utcnow


class EmailToken(SQLModel, table=True):
    """A link token sent by email, stored only as its SHA-256 fingerprint.

    Bound to one user and one purpose; spent once (``used_at``); dead after
    ``expires_at``. See ``herald_shared.tokens`` for how the token itself is
    derived (and why it never travels through the queue).
    """

    __tablename__ = "email_tokens"
    __table_args__ = (
        Index("email_tokens_user_idx", "user_id", "purpose"),
        # The token purge's: which tokens were spent or expired long ago (``DONE_AT``).
        Index("email_tokens_done_idx", text("least(used_at, expires_at)")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    purpose: str = Field(sa_column=Column(Text, nullable=False))
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    used_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    new_email: str | None = Field(default=None, sa_column=Column(String(254), nullable=True))
    """For purpose ``change_email``: the address the link confirms."""


def done_at() -> ColumnElement[datetime]:
    """When a token stopped working: spent, or else expired (``least`` skips a NULL
    ``used_at``); what the token purge asks about, the expression of
    ``email_tokens_done_idx``."""
    return func.least(col(EmailToken.used_at), col(EmailToken.expires_at))

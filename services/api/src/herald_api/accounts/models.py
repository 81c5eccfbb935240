"""The link tokens table (emailed links, stored only as their fingerprints) and the
idempotency keys table (the first answer to a request sent with an ``Idempotency-Key``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
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


class IdempotencyKey(SQLModel, table=True):
    """A request sent with an ``Idempotency-Key``, recorded in the transaction of the
    change it caused, with its first answer (``accounts.idempotency``; docs/api.md).

    Neither the key nor the body is stored: ``key_hash`` is the SHA-256 of the key in
    its scope (route, and caller for authenticated routes), ``fingerprint`` an HMAC of
    the body (it holds a password). ``user_id``: the account the request concerned,
    whose deletion deletes the row; the check is deferred to the commit, since a
    signup records its key before the account it creates.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        Index("idempotency_keys_user_idx", "user_id", postgresql_where=text("user_id IS NOT NULL")),
        Index("idempotency_keys_expires_idx", "expires_at"),
    )

    key_hash: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    user_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            ForeignKey("users.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
            nullable=True,
        ),
    )
    fingerprint: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    status_code: int = Field(sa_column=Column(SmallInteger, nullable=False))
    answer: str = Field(sa_column=Column(Text, nullable=False))
    """The first answer's JSON body, as sent."""
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))

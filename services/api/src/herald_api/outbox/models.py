"""The outbox table: one row per queue message, written with the change that causes it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from herald_api.core.db import utcnow


class OutboxMessage(SQLModel, table=True):
    """A queue message staged in the transaction that caused it (the transactional outbox).

    Written with the change that causes it, in one transaction; pushed to Redis
    by the fast path right after commit or, failing that, by the relay
    (``outbox.relay``). ``relayed_at`` is set only after SAQ took the job.
    The row is the ledger of its message: it is settled (``settled_at``,
    ``settled_as``) only once the reconciliation (``outbox.reconciliation``)
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
        # An account deletion's: which rows are that account's.
        Index("outbox_user_idx", "user_id"),
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
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    available_at: datetime = Field(
        default_factory=utcnow,
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
    user_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    """The account the message is for (``AccountEmail.user_id``); None for another kind."""
    repushes: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    """How often the reconciliation pushed the message again (Redis had lost it)."""

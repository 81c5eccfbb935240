"""The users table: who may log in, with which password hash and token version."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlmodel import Field, SQLModel

from herald_api.core.db import utcnow


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
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    email_verified_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    verification_reminded_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    locale: str = Field(
        default="en",
        sa_column=Column(String(35), nullable=False, server_default=text("'en'")),
    )
    """The user's language as a BCP 47 tag (``herald_shared.locales``), as they asked
    for it: emails and pages fall back from it to a language Herald has."""
    token_version: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default=text("0"))
    )
    """Carried by every access token (claim ``ver``); a password change raises it, so
    the tokens issued before stop working."""

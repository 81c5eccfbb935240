"""The users table (who may log in, with which password hash and token version) and the
sessions table (one row per login, holding its refresh token's hash), with the hashes of
the refresh tokens its rotations retired."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
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


class LoginSession(SQLModel, table=True):
    """One login: its refresh token (as SHA-256 only), the one it replaced, and its life.

    The row's id is the session (the refresh-token family of RFC 9700 §4.14): every
    rotation stays in it, and ending it ends them all. It is live while
    ``revoked_at`` is NULL and neither ``expires_at`` (absolute) nor
    ``last_used_at`` + the idle time has passed.
    """

    __tablename__ = "sessions"
    __table_args__ = (
        Index("sessions_user_idx", "user_id"),
        # Reuse detection finds a session by the token it replaced.
        Index(
            "sessions_previous_token_idx",
            "previous_token_hash",
            postgresql_where=text("previous_token_hash IS NOT NULL"),
        ),
        # The purge's two questions (``auth.housekeeping.ended_before``): revoked or past
        # the absolute end (``least`` skips a NULL revoked_at), and unused since when.
        Index("sessions_ended_idx", text("least(revoked_at, expires_at)")),
        Index("sessions_last_used_idx", "last_used_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    """SHA-256 (hex) of the current refresh token."""
    previous_token_hash: str | None = Field(
        default=None, sa_column=Column(String(64), nullable=True)
    )
    """SHA-256 (hex) of the refresh token the last rotation replaced."""
    rotated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    last_used_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    """The absolute end (login + ``HERALD_SESSION_MAX_DAYS``)."""
    user_agent: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    client_network: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    """The client's IPv4 address or IPv6 /64 at login: a coarse location."""
    revoked_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    revoked_reason: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    """logout, ended, ended_by_other, reuse, password_changed, password_reset."""


class RetiredRefreshToken(SQLModel, table=True):
    """A refresh token of a session replaced before its last rotation (only its
    SHA-256): presented again, it ends its session as a reuse."""

    __tablename__ = "retired_refresh_tokens"
    __table_args__ = (Index("retired_refresh_tokens_session_idx", "session_id"),)

    token_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    session_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False)
    )

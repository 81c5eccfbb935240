"""Sessions: one row per login, holding the SHA-256 of its current refresh token.

The row's id is the refresh-token family: rotation replaces ``token_hash`` and keeps
the replaced one in ``previous_token_hash`` (with ``rotated_at``) for the grace
window and reuse detection. Deleted with its user.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("previous_token_hash", sa.String(64), nullable=True),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "last_used_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.String(256), nullable=True),
        sa.Column("client_network", sa.String(64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
    )
    op.create_index("sessions_user_idx", "sessions", ["user_id"])
    op.create_index(
        "sessions_previous_token_idx",
        "sessions",
        ["previous_token_hash"],
        postgresql_where=sa.text("previous_token_hash IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("sessions_previous_token_idx", table_name="sessions")
    op.drop_index("sessions_user_idx", table_name="sessions")
    op.drop_table("sessions")

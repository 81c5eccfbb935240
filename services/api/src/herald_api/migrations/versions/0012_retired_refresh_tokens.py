"""Retired refresh tokens: every token a session's rotations replaced before its last one.

Only their SHA-256, so that a token of the family presented however long after still
ends the session (reuse detection); deleted with its session.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column(
            "session_id",
            sa.Uuid(),
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    # The cascade from a deleted session (and its purge) finds its rows by this.
    op.create_index("retired_refresh_tokens_session_idx", "retired_refresh_tokens", ["session_id"])


def downgrade() -> None:
    op.drop_index("retired_refresh_tokens_session_idx", table_name="retired_refresh_tokens")
    op.drop_table("retired_refresh_tokens")

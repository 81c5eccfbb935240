"""Email verification: link tokens (stored as fingerprints), and when a user was reminded.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("email_tokens_user_idx", "email_tokens", ["user_id", "purpose"])
    op.add_column(
        "users", sa.Column("verification_reminded_at", sa.DateTime(timezone=True), nullable=True)
    )
    # Reminders and purges look for unverified users by age.
    op.create_index(
        "users_unverified_idx",
        "users",
        ["created_at"],
        postgresql_where=sa.text("email_verified_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("users_unverified_idx", table_name="users")
    op.drop_column("users", "verification_reminded_at")
    op.drop_index("email_tokens_user_idx", table_name="email_tokens")
    op.drop_table("email_tokens")

"""Email change: a change_email link token carries the address it confirms.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("email_tokens", sa.Column("new_email", sa.String(254), nullable=True))


def downgrade() -> None:
    op.drop_column("email_tokens", "new_email")

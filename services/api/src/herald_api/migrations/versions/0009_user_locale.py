"""The user's locale: the language of their emails and pages.

``users.locale``, a BCP 47 tag (``herald_shared.locales``). Existing accounts get
``en``, the language they were emailed in so far; a constant default is a
metadata-only change in PostgreSQL 11 and later (no table rewrite).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("locale", sa.String(35), nullable=False, server_default=sa.text("'en'")),
    )


def downgrade() -> None:
    op.drop_column("users", "locale")

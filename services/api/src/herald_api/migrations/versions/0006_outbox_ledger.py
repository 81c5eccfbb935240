"""The outbox is the ledger: a row is settled only once its delivery is known.

``checked_at``: when the row's message was last known to be in flight (its
push, or the reconciliation's last look); ``settled_at`` / ``settled_as``
(delivered, dead, skipped): when and how its fate was confirmed in Redis;
``repushes``: how often the reconciliation pushed it again. Rows relayed
before this revision are checked from their relay time. Partial indexes make
each question an index scan: which unsettled rows are due a check (the
reconciliation), the oldest unsettled row (its gauge), which rows were settled
long ago (the purge, which never deletes an unsettled row).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("outbox", sa.Column("settled_as", sa.Text(), nullable=True))
    op.add_column(
        "outbox",
        sa.Column("repushes", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_check_constraint(
        "outbox_settled_as_check",
        "outbox",
        "(settled_at IS NULL) = (settled_as IS NULL) "
        "AND settled_as IN ('delivered', 'dead', 'skipped')",
    )
    op.execute("UPDATE outbox SET checked_at = relayed_at WHERE relayed_at IS NOT NULL")
    op.create_index(
        "outbox_unchecked_idx",
        "outbox",
        ["checked_at"],
        postgresql_where=sa.text("settled_at IS NULL AND checked_at IS NOT NULL"),
    )
    op.create_index(
        "outbox_unsettled_idx",
        "outbox",
        ["created_at"],
        postgresql_where=sa.text("settled_at IS NULL"),
    )
    op.create_index(
        "outbox_settled_idx",
        "outbox",
        ["settled_at"],
        postgresql_where=sa.text("settled_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("outbox_settled_idx", table_name="outbox")
    op.drop_index("outbox_unsettled_idx", table_name="outbox")
    op.drop_index("outbox_unchecked_idx", table_name="outbox")
    op.drop_constraint("outbox_settled_as_check", "outbox")
    op.drop_column("outbox", "repushes")
    op.drop_column("outbox", "settled_as")
    op.drop_column("outbox", "settled_at")
    op.drop_column("outbox", "checked_at")

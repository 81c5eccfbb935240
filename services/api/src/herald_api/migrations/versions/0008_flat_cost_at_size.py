"""Flat cost at size: an account's outbox rows and the purge's link tokens by index.

``outbox.user_id``: the account a row's message is for, written when it is
staged, so deleting an account finds its rows by index instead of reading every
payload (``bench/size.py``: 16x slower than on an empty database at 1.7 M rows,
and growing with the table). Rows staged before this revision get it from their payload here.
``email_tokens_done_idx`` on ``least(used_at, expires_at)``: the token purge's
question ("spent or expired before the cutoff", ``least`` skips a NULL
``used_at``) as one index range instead of a scan of the table.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("user_id", sa.Uuid(), nullable=True))
    # Every message of the contract is an account email: all carry a user_id.
    op.execute(
        "UPDATE outbox SET user_id = (payload ->> 'user_id')::uuid "
        "WHERE payload ->> 'user_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'"
    )
    op.create_index("outbox_user_idx", "outbox", ["user_id"])
    op.create_index(
        "email_tokens_done_idx",
        "email_tokens",
        [sa.text("least(used_at, expires_at)")],
    )


def downgrade() -> None:
    op.drop_index("email_tokens_done_idx", table_name="email_tokens")
    op.drop_index("outbox_user_idx", table_name="outbox")
    op.drop_column("outbox", "user_id")

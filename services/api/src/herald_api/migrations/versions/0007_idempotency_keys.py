"""Idempotency keys: the first answer to a request sent with an ``Idempotency-Key``.

One row per key in its scope (route, and caller for authenticated routes), written in
the transaction of the change the request caused: the SHA-256 of the scoped key, an
HMAC fingerprint of the body, the answer (status and JSON body) and when it expires.
The account it concerned is a deferred foreign key (a signup records its key before
the account it creates), deleted with it; the purge finds expired rows by index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("key_hash", sa.LargeBinary(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"),
            nullable=True,
        ),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "idempotency_keys_user_idx",
        "idempotency_keys",
        ["user_id"],
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_index("idempotency_keys_expires_idx", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("idempotency_keys_expires_idx", table_name="idempotency_keys")
    op.drop_index("idempotency_keys_user_idx", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")

"""The session purge's indexes: sessions that ended long ago, found without a scan.

A session ended when it was revoked, when its absolute end passed, or when it went
``HERALD_SESSION_IDLE_DAYS`` without a refresh. ``sessions_ended_idx`` on
``least(revoked_at, expires_at)`` answers the first two as one range (``least``
skips a NULL ``revoked_at``); ``sessions_last_used_idx`` the third, which cannot join
them in one expression: the idle time is a setting, and ``timestamptz + interval``
is not immutable. The purge reads both together (a BitmapOr).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("sessions_ended_idx", "sessions", [sa.text("least(revoked_at, expires_at)")])
    op.create_index("sessions_last_used_idx", "sessions", ["last_used_at"])


def downgrade() -> None:
    op.drop_index("sessions_last_used_idx", table_name="sessions")
    op.drop_index("sessions_ended_idx", table_name="sessions")

"""The Alembic migrations build exactly the schema the models describe, and undo it."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from herald_api.accounts import models as account_models  # noqa: F401  (registers the tables)
from herald_api.auth import models as auth_models  # noqa: F401
from herald_api.core.migrate import alembic_config
from herald_api.core.settings import Settings
from herald_api.outbox import models as outbox_models  # noqa: F401


def _differences(connection: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(connection), SQLModel.metadata))


async def test_the_migrated_schema_matches_the_models(settings: Settings) -> None:
    engine = create_async_engine(settings.sqlalchemy_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()

    assert differences == []


async def test_the_migrations_go_down_and_up_again(
    settings: Settings, db: asyncpg.Connection
) -> None:
    tables = (
        "SELECT array_agg(tablename::text ORDER BY tablename) FROM pg_tables "
        "WHERE schemaname = 'public'"
    )
    config = alembic_config(settings)

    # Alembic's env.py runs its own event loop: off ours, in a thread.
    await asyncio.to_thread(command.downgrade, config, "0001")
    assert await db.fetchval(tables) == ["alembic_version", "users"]
    await asyncio.to_thread(command.upgrade, config, "head")
    assert await db.fetchval(tables) == [
        "alembic_version",
        "email_tokens",
        "idempotency_keys",
        "outbox",
        "retired_refresh_tokens",
        "sessions",
        "users",
    ]
    index = await db.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_pending_idx'"
    )
    assert "WHERE (relayed_at IS NULL)" in index
    purge_indexes = await db.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
        "('sessions_ended_idx', 'sessions_last_used_idx') ORDER BY indexname"
    )
    assert [(row["indexname"], row["indexdef"].split(" USING ")[1]) for row in purge_indexes] == [
        ("sessions_ended_idx", "btree (LEAST(revoked_at, expires_at))"),
        ("sessions_last_used_idx", "btree (last_used_at)"),
    ]
    columns = await db.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
    )
    assert "verification_reminded_at" in {row["column_name"] for row in columns}


async def test_outbox_rows_staged_before_0008_get_their_account_from_the_payload(
    settings: Settings, db: asyncpg.Connection
) -> None:
    config = alembic_config(settings)
    await asyncio.to_thread(command.downgrade, config, "0006")
    user_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO outbox (message_id, task, queue, payload) VALUES "
        "(gen_random_uuid(), 'send_password_changed_email', 'notifier', $1::jsonb), "
        "(gen_random_uuid(), 'send_password_changed_email', 'notifier', $2::jsonb)",
        json.dumps({"user_id": str(user_id)}),
        json.dumps({"user_id": "not a uuid"}),  # a malformed row, set aside: left alone
    )

    await asyncio.to_thread(command.upgrade, config, "head")

    rows = await db.fetch("SELECT payload->>'user_id' AS claimed, user_id FROM outbox")
    assert {row["claimed"]: row["user_id"] for row in rows} == {
        str(user_id): user_id,
        "not a uuid": None,
    }

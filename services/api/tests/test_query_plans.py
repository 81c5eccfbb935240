"""The statements that must cost the same on a big database use an index.

Each test fills the table concerned with enough rows (generate_series) for the
planner to prefer an index when one fits, ANALYZEs it, runs the real request
while recording the SQL the API sends, and asks PostgreSQL for the plan of that
very statement (EXPLAIN, not run): it must use the index, with no sequential
scan of the big table. ``bench/size.py`` measures what these plans cost at
1,000,000 accounts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import event
from sqlalchemy.engine import Engine

from herald_api.core.settings import Settings

ROWS = 100_000
TOKEN = "internal-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PASSWORD = "correct horse battery staple"
DAY = 24 * 3600


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


@contextmanager
def recorded() -> Iterator[list[tuple[str, Any]]]:
    """Every statement (with its parameters) any engine sends meanwhile."""
    statements: list[tuple[str, Any]] = []

    def record(_conn: object, _cursor: object, sql: str, params: Any, *_: object) -> None:
        statements.append((sql, params))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def the_one(statements: list[tuple[str, Any]], start: str) -> tuple[str, Any]:
    [found] = [(sql, params) for sql, params in statements if sql.lstrip().startswith(start)]
    return found


async def plan_of(db: asyncpg.Connection, sql: str, params: Any) -> list[dict[str, Any]]:
    """The nodes of the plan PostgreSQL would run ``sql`` with (not running it)."""
    text = await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *(params or ()))
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(json.loads(text)[0]["Plan"])
    return nodes


def assert_indexed(nodes: list[dict[str, Any]], *, table: str, index: str) -> None:
    """No sequential scan of ``table``, and ``index`` used (a bitmap index scan names
    only the index, its heap scan the table)."""
    seq_scans = [n for n in nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == table]
    assert seq_scans == []
    assert index in {n.get("Index Name") for n in nodes}, [n["Node Type"] for n in nodes]


async def sign_up_verified(client: httpx.AsyncClient, db: asyncpg.Connection, email: str) -> str:
    """Sign ``email`` up, verify it, log in: the access token."""
    body = {"email": email, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/api/v1/users", json=body)).status_code == 202
    await db.execute("UPDATE users SET email_verified_at = now() WHERE email = $1", email)
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200
    return str(response.json()["access_token"])


async def fill_outbox(db: asyncpg.Connection, **columns: str) -> None:
    """``ROWS`` settled outbox rows of other accounts (``columns``: SQL for other columns)."""
    names = "".join(f", {name}" for name in columns)
    values = "".join(f", {value}" for value in columns.values())
    await db.execute(
        "INSERT INTO outbox (message_id, task, queue, payload, user_id, relayed_at, checked_at, "
        f"settled_at, settled_as{names}) "
        "SELECT gen_random_uuid(), 'send_password_changed_email', 'notifier', "
        "jsonb_build_object('user_id', u), u, t, t, t + interval '5 minutes', 'delivered'"
        f"{values} FROM generate_series(1, $1) AS i, "
        "LATERAL (SELECT gen_random_uuid() AS u, now() - make_interval(secs => i % 80000) AS t "
        "WHERE i IS NOT NULL) AS a",
        ROWS,
    )
    await db.execute("ANALYZE outbox")


async def test_deleting_an_account_finds_its_outbox_rows_by_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await sign_up_verified(client, db, "ada@example.com")
    user_id = await db.fetchval("SELECT id FROM users")
    await fill_outbox(db)
    # The welcome email's row was staged with its account.
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE user_id = $1", user_id) == 1

    with recorded() as statements:
        response = await client.request(
            "DELETE",
            "/api/v1/users/me",
            json={"password": PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 204

    assert await db.fetchval("SELECT count(*) FROM outbox") == ROWS
    nodes = await plan_of(db, *the_one(statements, "DELETE FROM outbox"))
    assert_indexed(nodes, table="outbox", index="outbox_user_idx")


async def test_the_token_purge_finds_due_tokens_by_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await sign_up_verified(client, db, "ada@example.com")
    user_id = await db.fetchval("SELECT id FROM users")
    # Tokens of the last day, spent or not: none due; and ten spent two days ago.
    await db.execute(
        "INSERT INTO email_tokens (id, user_id, purpose, fingerprint, created_at, expires_at, "
        "used_at) SELECT gen_random_uuid(), $1, 'verify_email', md5(i::text) || md5((-i)::text), "
        "t, t + interval '48 hours', CASE WHEN i % 2 = 0 THEN t + interval '1 minute' END "
        "FROM generate_series(1, $2) AS i, "
        "LATERAL (SELECT now() - make_interval(secs => i % 80000) AS t WHERE i IS NOT NULL) AS a",
        user_id,
        ROWS,
    )
    await db.execute(
        "INSERT INTO email_tokens (id, user_id, purpose, fingerprint, created_at, expires_at, "
        "used_at) SELECT gen_random_uuid(), $1, 'verify_email', md5(random()::text), "
        "now() - interval '3 days', now() - interval '1 day', now() - interval '2 days' "
        "FROM generate_series(1, 10)",
        user_id,
    )
    await db.execute("ANALYZE email_tokens")

    with recorded() as statements:
        response = await client.post(
            "/internal/v1/tokens/purge", json={"older_than_seconds": DAY}, headers=AUTH
        )
    assert response.json() == {"deleted": 10}

    nodes = await plan_of(db, *the_one(statements, "DELETE FROM email_tokens"))
    assert_indexed(nodes, table="email_tokens", index="email_tokens_done_idx")


async def test_the_outbox_purge_finds_settled_rows_by_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await fill_outbox(db)
    # Ten rows settled two days ago, and one as old but not settled (never purged).
    await db.execute(
        "INSERT INTO outbox (message_id, task, queue, payload, relayed_at, checked_at, "
        "settled_at, settled_as) SELECT gen_random_uuid(), 'send_password_changed_email', "
        "'notifier', '{}'::jsonb, t, t, CASE WHEN i <= 10 THEN t END, "
        "CASE WHEN i <= 10 THEN 'delivered' END "
        "FROM generate_series(1, 11) AS i, LATERAL (SELECT now() - interval '2 days' AS t) AS a"
    )
    await db.execute("ANALYZE outbox")

    with recorded() as statements:
        response = await client.post(
            "/internal/v1/outbox/purge", json={"older_than_seconds": DAY}, headers=AUTH
        )
    assert response.json() == {"deleted": 10}
    assert await db.fetchval("SELECT count(*) FROM outbox") == ROWS + 1

    nodes = await plan_of(db, *the_one(statements, "DELETE FROM outbox"))
    assert_indexed(nodes, table="outbox", index="outbox_settled_idx")
    # Each doomed row is reached by its address, not by a descent of the primary key.
    assert "outbox_pkey" not in {n.get("Index Name") for n in nodes}
    assert any(n["Node Type"] == "Tid Scan" for n in nodes), [n["Node Type"] for n in nodes]


async def test_the_unverified_purge_finds_old_unverified_accounts_by_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Accounts of the last 90 days, one in ten unverified and younger than a week.
    await db.execute(
        "INSERT INTO users (id, email, display_name, password_hash, created_at, "
        "email_verified_at) SELECT gen_random_uuid(), 'user' || i || '@example.com', 'U', 'x', "
        "t, CASE WHEN i % 10 <> 0 THEN t END FROM generate_series(1, $1) AS i, "
        "LATERAL (SELECT now() - make_interval(secs => CASE WHEN i % 10 = 0 THEN i % 600000 "
        "ELSE i * 77 END) AS t WHERE i IS NOT NULL) AS a",
        ROWS,
    )
    await db.execute("ANALYZE users")

    with recorded() as statements:
        response = await client.post(
            "/internal/v1/users/purge-unverified",
            json={"older_than_seconds": 7 * DAY},
            headers=AUTH,
        )
    assert response.json() == {"deleted": 0}

    nodes = await plan_of(db, *the_one(statements, "DELETE FROM users"))
    assert_indexed(nodes, table="users", index="users_unverified_idx")


async def test_the_session_purge_finds_ended_sessions_by_index(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await sign_up_verified(client, db, "ada@example.com")
    user_id = await db.fetchval("SELECT id FROM users")
    # Sessions used within the idle time (30 days), one in ten ended (revoked) within the
    # week: none due. Then ten due: revoked, expired, idle since long ago.
    await db.execute(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_used_at, expires_at, "
        "revoked_at) SELECT gen_random_uuid(), $1, md5(i::text) || md5((-i)::text), "
        "t - interval '1 day', t, t + interval '89 days', "
        "CASE WHEN i % 10 = 0 THEN now() - make_interval(secs => i % 600000) END "
        "FROM generate_series(1, $2) AS i, "
        "LATERAL (SELECT now() - make_interval(secs => i * 25) AS t WHERE i IS NOT NULL) AS a",
        user_id,
        ROWS,
    )
    await db.execute(
        "INSERT INTO sessions (id, user_id, token_hash, created_at, last_used_at, expires_at, "
        "revoked_at) SELECT gen_random_uuid(), $1, md5(random()::text), t, "
        "CASE WHEN i % 3 = 2 THEN t ELSE now() - interval '10 days' END, "
        "CASE WHEN i % 3 = 1 THEN now() - interval '8 days' ELSE t + interval '90 days' END, "
        "CASE WHEN i % 3 = 0 THEN now() - interval '8 days' END "
        "FROM generate_series(1, 10) AS i, "
        "LATERAL (SELECT now() - interval '60 days' AS t WHERE i IS NOT NULL) AS a",
        user_id,
    )
    await db.execute("ANALYZE sessions")

    with recorded() as statements:
        response = await client.post(
            "/internal/v1/sessions/purge", json={"older_than_seconds": 7 * DAY}, headers=AUTH
        )
    assert response.json() == {"deleted": 10}
    assert await db.fetchval("SELECT count(*) FROM sessions") == ROWS + 1

    # Both rules, each by its index, read together (a BitmapOr): no scan of the table.
    nodes = await plan_of(db, *the_one(statements, "DELETE FROM sessions"))
    assert_indexed(nodes, table="sessions", index="sessions_ended_idx")
    assert_indexed(nodes, table="sessions", index="sessions_last_used_idx")

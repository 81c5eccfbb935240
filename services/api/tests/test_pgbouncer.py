"""The API behind a real transaction-mode PgBouncer (Debian's package, 1.18: no
prepared-statement tracking), with HERALD_DATABASE_POOLER=transaction.

PgBouncer gets two server connections and the API a pool of six: consecutive
transactions of one API connection run on whichever server connection is free,
so a statement prepared on one is unknown on the other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from herald_api.core.migrate import migrate
from herald_api.core.settings import Settings
from herald_testing.backends import admin
from herald_testing.clients import OpenClient
from herald_testing.pgbouncer import pgbouncer, pgbouncer_binary
from herald_testing.ports import free_port
from herald_testing.waiting import eventually

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None, reason="pgbouncer not installed (Debian: apt install pgbouncer)"
)

SIGNUPS = 24
ROUNDS = 3


@pytest.fixture
def pooled_url(database_url: str) -> Iterator[str]:
    """The test's database, through PgBouncer in transaction mode."""
    with pgbouncer(database_url, server_pool_size=2) as url:
        yield url


def behind_pooler(settings: Settings, pooled_url: str, *, pooler: str) -> Settings:
    return Settings(
        **settings.model_dump()
        | {
            "database_url": pooled_url,
            "database_pooler": pooler,
            "database_pool_size": 6,
            "migration_database_url": str(settings.database_url),
            # Admission control stays out of the way: every request is admitted.
            "hash_queue_depth": SIGNUPS * 2,
            "database_pool_timeout_seconds": 30.0,
        }
    )


async def sign_up_many(http: httpx.AsyncClient, tag: str) -> list[int | BaseException]:
    """``SIGNUPS`` concurrent signups, then a login of each (refused until the address is
    verified, after reading the account and checking its password); every status code,
    or the exception the app raised instead of answering."""
    emails = [f"{tag}-{i}@example.com" for i in range(SIGNUPS)]
    password = "correct horse battery staple"
    signups = await asyncio.gather(
        *(
            http.post(
                "/api/v1/users",
                json={"email": email, "password": password, "display_name": "Pooled"},
            )
            for email in emails
        ),
        return_exceptions=True,
    )
    logins = await asyncio.gather(
        *(
            http.post("/api/v1/auth/token", data={"username": email, "password": password})
            for email in emails
        ),
        return_exceptions=True,
    )
    return [
        answer if isinstance(answer, BaseException) else answer.status_code
        for answer in (*signups, *logins)
    ]


async def test_the_api_works_through_a_transaction_mode_pooler(
    settings: Settings, pooled_url: str, open_client: OpenClient, db: asyncpg.Connection
) -> None:
    pooled = behind_pooler(settings, pooled_url, pooler="transaction")
    async with open_client(pooled) as http:
        statuses: list[int | BaseException] = []
        for round_ in range(ROUNDS):
            statuses += await sign_up_many(http, f"round{round_}")
        assert statuses.count(202) == SIGNUPS * ROUNDS, statuses
        assert statuses.count(403) == SIGNUPS * ROUNDS, statuses

        # The outbox relay and its fast path ran through the pooler too.
        async def all_relayed() -> bool:
            pending = await db.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")
            return int(pending) == 0

        await eventually(all_relayed, "every outbox row relayed", within=20)
    assert await db.fetchval("SELECT count(*) FROM users") == SIGNUPS * ROUNDS
    assert await db.fetchval("SELECT count(*) FROM outbox") == SIGNUPS * ROUNDS


async def test_without_the_setting_the_same_load_fails_through_the_pooler(
    settings: Settings, pooled_url: str, open_client: OpenClient
) -> None:
    """What the setting prevents: asyncpg's named prepared statements, cached per API
    connection, are missing on the server connection the next transaction lands on."""
    unpooled = behind_pooler(settings, pooled_url, pooler="none")
    failed: list[int | BaseException] = []
    async with open_client(unpooled) as http:
        for round_ in range(10):
            failed = [
                answer
                for answer in await sign_up_many(http, f"bare{round_}")
                if isinstance(answer, BaseException) or answer == 500
            ]
            if failed:
                break
    assert failed, "every request succeeded: PgBouncer no longer breaks named statements"


def test_transaction_pooler_mode_requires_a_direct_migration_url(
    settings: Settings, pooled_url: str
) -> None:
    with pytest.raises(ValidationError, match="HERALD_MIGRATION_DATABASE_URL"):
        Settings(
            **settings.model_dump() | {"database_url": pooled_url, "database_pooler": "transaction"}
        )


async def test_migrations_connect_directly_never_through_the_pooler(
    settings: Settings, postgres_url: str
) -> None:
    name = f"herald_direct_{uuid.uuid4().hex[:10]}"
    direct = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    migrating = Settings(
        **settings.model_dump()
        | {
            # Nothing listens here: a migration that used it would fail.
            "database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/{name}",
            "database_pooler": "transaction",
            "migration_database_url": direct,
        }
    )
    try:
        await asyncio.to_thread(migrate, migrating)
        conn = await asyncpg.connect(direct)
        try:
            assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
        finally:
            await conn.close()
    finally:
        await admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

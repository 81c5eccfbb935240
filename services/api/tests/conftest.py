"""Real PostgreSQL and Redis for the API's tests.

The schema is built once per session by the real migrations into a template
database; each test gets a fresh copy (``CREATE DATABASE ... TEMPLATE``) and
its own Redis namespace.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from saq import Queue
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.db import create_engine, session_factory
from herald_api.core.migrate import migrate
from herald_api.core.settings import Settings
from herald_api.main import create_app
from herald_api.outbox.relay import Relay
from herald_shared import queues
from herald_testing.backends import admin
from herald_testing.clients import OpenClient
from herald_testing.messages import LINK_SECRET, welcome_email

JWT_SECRET = "jwt-secret-for-tests-only-0123456789abcdef"
"""HERALD_JWT_SECRET of the API under test (tests forge and check access tokens with it)."""


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    name = f"herald_template_{uuid.uuid4().hex[:8]}"
    migrate(
        Settings(
            database_url=_with_database(postgres_url, name),
            link_secret=LINK_SECRET,
            jwt_secret=JWT_SECRET,
        )
    )
    yield name
    asyncio.run(admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    await admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _with_database(postgres_url, name)
    await admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, redis_url: str, queue_namespace: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_namespace=queue_namespace,
        hash_workers=2,
        link_secret=LINK_SECRET,
        jwt_secret=JWT_SECRET,
        # Tests send many requests from one address; the rate limit tests turn them on.
        rate_limits_enabled=False,
        metrics_port=0,
    )


@pytest.fixture
def api_env(settings: Settings) -> dict[str, str]:
    """The environment of a real ``herald-api serve`` process on the test's database and
    Redis (``herald_testing.processes.serve_api``)."""
    return {
        "HERALD_DATABASE_URL": str(settings.database_url),
        "HERALD_REDIS_URL": settings.redis_url,
        "HERALD_QUEUE_NAMESPACE": settings.queue_namespace,
        "HERALD_HASH_WORKERS": "1",
        "HERALD_LINK_SECRET": settings.link_secret.get_secret_value(),
        "HERALD_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "HERALD_RATE_LIMITS_ENABLED": "false",
    }


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app built from ``settings``, its lifespan running."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://herald.test"
        ) as http,
    ):
        yield http


@pytest.fixture
def open_client() -> OpenClient:
    """``app_client``, for tests that need an app with settings of their own."""
    return app_client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as http:
        yield http


@pytest.fixture
async def no_token_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app configured without ``HERALD_INTERNAL_TOKEN``."""
    async with app_client(settings.model_copy(update={"internal_token": None})) as http:
        yield http


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for asserting what the API really stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's database, as the API opens them."""
    engine = create_engine(settings)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def make_relay(
    sessions: async_sessionmaker[AsyncSession], notifier_queue: Queue
) -> AsyncIterator[Callable[..., Relay]]:
    """Build outbox relays on the test's database and queue (settings overridable).

    Every relay it built and started is stopped afterwards.
    """
    built: list[Relay] = []

    def make(**overrides: Any) -> Relay:
        options: dict[str, Any] = {
            "sessions": sessions,
            "queues": {queues.NOTIFIER: notifier_queue},
            "batch_size": 200,
            "poll_seconds": 0.05,
            "max_backoff_seconds": 1.0,
            "push_timeout_seconds": 2.0,
        }
        relay = Relay(**(options | overrides))
        built.append(relay)
        return relay

    yield make
    for relay in built:
        await relay.stop()


@pytest.fixture
def insert_pending(db: asyncpg.Connection) -> Callable[..., Awaitable[list[uuid.UUID]]]:
    """Insert ``count`` due outbox rows of valid WelcomeEmails (no users); their ids.

    Keyword arguments set other columns to SQL expressions, in the same INSERT (a
    relay running meanwhile never sees the row as it was before them).
    """

    async def insert(count: int, **columns: str) -> list[uuid.UUID]:
        messages = [
            welcome_email(user_id=uuid.uuid4(), email=f"user{i}@example.com", display_name="U")
            for i in range(count)
        ]
        values = {"available_at": "now()"} | columns
        names = ", ".join(values)
        expressions = ", ".join(values.values())
        await db.executemany(
            f"INSERT INTO outbox (message_id, task, queue, payload, {names}) "
            f"VALUES ($1, 'send_welcome_email', 'notifier', $2::jsonb, {expressions})",
            [(m.message_id, json.dumps(m.encode())) for m in messages],
        )
        return [m.message_id for m in messages]

    return insert

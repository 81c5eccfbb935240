"""Real PostgreSQL and Redis for the API's tests.

The schema is built once per session by the real migrations into a template
database; each test gets a fresh copy (``CREATE DATABASE ... TEMPLATE``) and
its own Redis namespace.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from herald_api.app import create_app
from herald_api.migrate import migrate
from herald_api.settings import Settings


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def _admin(postgres_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_with_database(postgres_url, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    name = f"herald_template_{uuid.uuid4().hex[:8]}"
    migrate(Settings(database_url=_with_database(postgres_url, name)))
    yield name
    asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"herald_test_{uuid.uuid4().hex[:12]}"
    await _admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _with_database(postgres_url, name)
    await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str, redis_url: str, queue_namespace: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        queue_namespace=queue_namespace,
        hash_workers=2,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://herald.test"
        ) as http,
    ):
        yield http


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection, for asserting what the API really stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()

"""Find a real PostgreSQL and Redis for tests.

Order: the URL from the environment if set; else the server on localhost's
standard port if it answers; else a throwaway container through
testcontainers if a Docker engine answers; else one clear error saying what to
start.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url

from herald_testing.ports import port_open

POSTGRES_ENV = "HERALD_TEST_POSTGRES_URL"
REDIS_ENV = "HERALD_TEST_REDIS_URL"
POSTGRES_IMAGE = os.environ.get("HERALD_TEST_POSTGRES_IMAGE", "postgres:17-alpine")
REDIS_IMAGE = os.environ.get("HERALD_TEST_REDIS_IMAGE", "redis:7-alpine")
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


async def admin(url: str, *statements: str) -> None:
    """Run ``statements`` in the ``postgres`` database of ``url``'s server: CREATE
    and DROP DATABASE must run outside the database they name."""
    conn = await asyncpg.connect(make_url(url).set(database="postgres").render_as_string(False))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class BackendUnavailableError(RuntimeError):
    """No PostgreSQL/Redis/MailDev could be found or started for the tests."""


def docker_available() -> bool:
    try:
        import docker  # noqa: PLC0415  (optional: only needed without local servers)

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def _missing(what: str, env: str, port: int) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"No {what} for the tests: set {env}, start {what} on 127.0.0.1:{port}, "
        f"or start a Docker engine so testcontainers can run one."
    )


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A superuser URL (``postgresql://``) of a PostgreSQL server tests may create databases on."""
    if url := os.environ.get(POSTGRES_ENV):
        yield url
    elif port_open("127.0.0.1", 5432):
        yield LOCAL_POSTGRES
    elif docker_available():
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        raise _missing("PostgreSQL", POSTGRES_ENV, 5432)


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """The URL of a Redis server tests may use (each test stays in its own namespace)."""
    if url := os.environ.get(REDIS_ENV):
        yield url
    elif port_open("127.0.0.1", 6379):
        yield LOCAL_REDIS
    elif docker_available():
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

        with RedisContainer(REDIS_IMAGE) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
    else:
        raise _missing("Redis", REDIS_ENV, 6379)

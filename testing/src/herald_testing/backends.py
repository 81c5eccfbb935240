"""Find a real PostgreSQL and Redis for tests.

Order: the URL from the environment if set; else the server on localhost's
standard port if it answers; else a throwaway container through
testcontainers if a Docker engine answers; else one clear error saying what to
start. ``HERALD_TEST_BACKENDS=containers`` skips the first two (the path of a
machine that has only Docker, which CI runs so that it cannot rot).
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
BACKENDS_ENV = "HERALD_TEST_BACKENDS"
"""``auto`` (the order above) or ``containers`` (testcontainers only)."""
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


# The fixtures stop their containers as their blocks end; Ryuk (testcontainers'
# reaper of containers a killed run left) needs an image offline machines lack.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def containers_only() -> bool:
    """Whether ``HERALD_TEST_BACKENDS`` asks for containers even where local servers answer."""
    mode = os.environ.get(BACKENDS_ENV, "auto") or "auto"
    if mode not in ("auto", "containers"):
        raise BackendUnavailableError(f"{BACKENDS_ENV} must be auto or containers, not {mode!r}")
    return mode == "containers"


def docker_available() -> bool:
    try:
        import docker  # noqa: PLC0415  (optional: only needed without local servers)

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


def missing_error(what: str, env: str, port: int) -> BackendUnavailableError:
    if containers_only():
        return BackendUnavailableError(
            f"No {what} for the tests: {BACKENDS_ENV}=containers, but no Docker engine "
            f"answers. Fix: start Docker (docker info must work), or drop {BACKENDS_ENV}."
        )
    return BackendUnavailableError(
        f"No {what} for the tests: nothing answers on 127.0.0.1:{port}, {env} is not set "
        f"and no Docker engine answers. Fix, any one of: start {what} on 127.0.0.1:{port}; "
        f"set {env} to a server the tests may use; or start Docker (the tests then run "
        f"{what} in a container themselves)."
    )


def postgres_source() -> str | None:
    """Where the tests' PostgreSQL comes from: ``env``, ``local``, ``container`` or ``None``."""
    return _source(POSTGRES_ENV, 5432)


def redis_source() -> str | None:
    """Where the tests' Redis comes from: ``env``, ``local``, ``container`` or ``None``."""
    return _source(REDIS_ENV, 6379)


def _source(env: str, port: int) -> str | None:
    if not containers_only():
        if os.environ.get(env):
            return "env"
        if port_open("127.0.0.1", port):
            return "local"
    return "container" if docker_available() else None


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A superuser URL (``postgresql://``) of a PostgreSQL server tests may create databases on."""
    source = postgres_source()
    if source == "env":
        yield os.environ[POSTGRES_ENV]
    elif source == "local":
        yield LOCAL_POSTGRES
    elif source == "container":
        from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield container.get_connection_url()
    else:
        raise missing_error("PostgreSQL", POSTGRES_ENV, 5432)


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """The URL of a Redis server tests may use (each test stays in its own namespace)."""
    source = redis_source()
    if source == "env":
        yield os.environ[REDIS_ENV]
    elif source == "local":
        yield LOCAL_REDIS
    elif source == "container":
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415

        with RedisContainer(REDIS_IMAGE) as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
    else:
        raise missing_error("Redis", REDIS_ENV, 6379)

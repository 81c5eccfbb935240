"""Schema migrations: create the database if missing, then ``alembic upgrade head``;
and the wait, before serving, for a database that carries this image's schema.

The schema is created and changed only here.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from herald_api.core.settings import Settings

log = structlog.get_logger(__name__)


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", "herald_api:migrations")
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", settings.migration_url.replace("%", "%%"))
    return config


async def ensure_database(settings: Settings) -> None:
    """Create the accounts database when the server lacks it."""
    url = make_url(settings.migration_url)
    name = url.database
    if not name:
        raise ValueError("the migration database URL names no database")
    maintenance = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(maintenance.render_as_string(hide_password=False))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            # Identifiers cannot be bound parameters; quote it the PostgreSQL way.
            quoted = '"' + name.replace('"', '""') + '"'
            await conn.execute(f"CREATE DATABASE {quoted}")
            log.info("database.created", database=name)
    finally:
        await conn.close()


def migrate(settings: Settings) -> None:
    asyncio.run(ensure_database(settings))
    command.upgrade(alembic_config(settings), "head")
    log.info("database.migrated", revision="head")


def image_revisions() -> tuple[frozenset[str], frozenset[str]]:
    """The Alembic heads this image ships, and every revision it knows."""
    config = Config()
    config.set_main_option("script_location", "herald_api:migrations")
    script = ScriptDirectory.from_config(config)
    return frozenset(script.get_heads()), frozenset(r.revision for r in script.walk_revisions())


async def database_revisions(settings: Settings) -> frozenset[str]:
    """The revisions in ``alembic_version``; empty while the database or the table is
    missing. Connects as the API does (a pooler is fine: no statement cache)."""
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    conn = await asyncpg.connect(
        url.render_as_string(hide_password=False), statement_cache_size=0, timeout=5
    )
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return frozenset()
    finally:
        await conn.close()
    return frozenset(row["version_num"] for row in rows)


async def wait_for_schema(settings: Settings, *, within: float, poll: float = 2.0) -> bool:
    """Wait until the database is at this image's head, or at a revision it does not
    know (a newer release migrated first, which a one-release-compatible migration
    allows); False once ``within`` seconds pass. Reads only: any number may wait.

    ``/health/ready`` checks that PostgreSQL answers, not the schema: an API that
    started before the migration would look ready and fail every request. Where no
    orchestrator orders the migration first (a Kubernetes init container, a Swarm
    task), ``herald-api wait-for-schema`` runs before ``herald-api serve``.
    """
    heads, known = image_revisions()
    deadline = time.monotonic() + within
    while True:
        problem: str | None = None
        try:
            current = await database_revisions(settings)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            current, problem = frozenset(), type(exc).__name__
        if current == heads or current - known:
            log.info("schema.ready", revisions=sorted(current), image_heads=sorted(heads))
            return True
        if time.monotonic() >= deadline:
            log.error("schema.timeout", revisions=sorted(current), image_heads=sorted(heads))
            return False
        log.info(
            "schema.waiting", revisions=sorted(current), image_heads=sorted(heads), error=problem
        )
        await asyncio.sleep(poll)

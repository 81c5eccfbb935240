"""Schema migrations: create the database if missing, then ``alembic upgrade head``.

The schema is created and changed only here.
"""

from __future__ import annotations

import asyncio

import asyncpg
import structlog
from alembic import command
from alembic.config import Config
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

"""Wait until the accounts database is at Alembic's head, then run the given command.

    python wait_for_migrations.py herald-api serve

Swarm has no ``depends_on``: an API replica may start before the stack's
migration job has run. ``/health/ready`` checks that PostgreSQL answers, not
the schema, so such a replica would look healthy and fail every signup. Each
replica therefore waits here (the database may not even exist yet) and gives up
after ``HERALD_MIGRATION_WAIT_SECONDS`` (exit 1; Swarm starts it again).
Mounted into the API image as a Swarm config by ``deploy/swarm/stack.yaml``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import asyncpg
import structlog
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from herald_api.core.migrate import alembic_config
from herald_api.core.settings import get_settings
from herald_shared.logs import configure_logging

log = structlog.get_logger("herald_api.wait_for_migrations")


async def current_revision(url: str) -> str | None:
    """The database's Alembic revision; ``None`` while it cannot say (no server, no
    database, no version table yet)."""
    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception:  # any failure to connect means "not yet"
        return None
    try:
        revision = await conn.fetchval("SELECT version_num FROM alembic_version")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    return None if revision is None else str(revision)


def main() -> None:
    command = sys.argv[1:]
    if not command:
        sys.exit("usage: wait_for_migrations.py COMMAND [ARGS...]")
    settings = get_settings()
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    url = make_url(settings.migration_url).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    within = float(os.environ.get("HERALD_MIGRATION_WAIT_SECONDS", "300"))
    started = time.monotonic()
    while (revision := asyncio.run(current_revision(dsn))) != head:
        if time.monotonic() - started > within:
            log.error("migrations.wait_timed_out", revision=revision, head=head, seconds=within)
            sys.exit(1)
        time.sleep(1)
    log.info("migrations.at_head", head=head, waited_s=round(time.monotonic() - started, 1))
    os.execvp(command[0], command)  # noqa: S606 - the command line given, no shell


if __name__ == "__main__":
    main()

"""Wait until the accounts database carries this image's schema, then exit 0.

The API pod's init container (deploy/k8s/README.md, "Migration ordering"): a new
API image must not serve before the migration Job has taken the database to the
Alembic head that image ships. It only reads ``alembic_version`` (no lock, no
write, no Kubernetes API access), so any number of API pods may wait at once.

Ready when the database's revision is this image's head, or a revision this
image does not know (a newer release migrated already; a rolling update needs
each migration to be compatible with the release before it anyway). Waiting
while the database, the table or the head is missing. Exits 1 after
``HERALD_SCHEMA_WAIT_SECONDS`` (default 600): the kubelet restarts the init
container and the Deployment's progress deadline reports the stalled rollout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

POLL_SECONDS = 2.0


def log(event: str, **fields: object) -> None:
    """One JSON line on stdout, as the services log."""
    print(json.dumps({"event": event, "logger": "wait_for_schema", **fields}), flush=True)


def image_revisions() -> tuple[set[str], set[str]]:
    """This image's Alembic heads, and every revision it knows."""
    config = Config()
    config.set_main_option("script_location", "herald_api:migrations")
    script = ScriptDirectory.from_config(config)
    return set(script.get_heads()), {rev.revision for rev in script.walk_revisions()}


async def database_revisions(url: str) -> set[str]:
    """The revisions in ``alembic_version``; empty while the database or table is missing."""
    # No statement cache: the URL may point at a transaction-mode pooler.
    conn = await asyncpg.connect(url, statement_cache_size=0, timeout=5)
    try:
        rows = await conn.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        return set()
    finally:
        await conn.close()
    return {row["version_num"] for row in rows}


def plain_url() -> str:
    """The API's database URL as asyncpg takes it (``postgresql://``)."""
    raw = os.environ.get("HERALD_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/herald")
    return make_url(raw).set(drivername="postgresql").render_as_string(hide_password=False)


async def wait(deadline_seconds: float) -> bool:
    """Poll until the schema is ready (True) or the deadline passes (False)."""
    heads, known = image_revisions()
    url = plain_url()
    deadline = time.monotonic() + deadline_seconds
    while True:
        problem: str | None = None
        try:
            current = await database_revisions(url)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            current, problem = set(), type(exc).__name__
        newer = current - known
        if current == heads or newer:
            log("schema.ready", revisions=sorted(current), image_heads=sorted(heads))
            return True
        if time.monotonic() >= deadline:
            log("schema.timeout", revisions=sorted(current), image_heads=sorted(heads))
            return False
        log("schema.waiting", revisions=sorted(current), image_heads=sorted(heads), error=problem)
        await asyncio.sleep(POLL_SECONDS)


def main() -> int:
    """Exit status 0 once the schema is ready, 1 on timeout."""
    seconds = float(os.environ.get("HERALD_SCHEMA_WAIT_SECONDS", "600"))
    return 0 if asyncio.run(wait(seconds)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""``herald-api wait-for-schema`` on a real PostgreSQL: what holds a new API pod or
task until the migration has run.

It must hold while the database lacks the image's schema (no database, an empty
one, an older revision), and let go once the migration reached the image's head,
or a revision newer than the image knows (old pods restarting after a newer
release migrated).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from herald_api import cli
from herald_api.core.migrate import image_revisions, migrate, wait_for_schema
from herald_api.core.settings import Settings, get_settings
from herald_testing.backends import admin
from herald_testing.messages import LINK_SECRET


@pytest.fixture
def fresh(postgres_url: str) -> Iterator[Settings]:
    """Settings for a database not created yet; dropped afterwards."""
    name = f"herald_wait_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name)
    yield Settings(
        database_url=url.render_as_string(hide_password=False),
        link_secret=LINK_SECRET,
        jwt_secret="j" * 32,
    )
    asyncio.run(admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _set_revision(settings: Settings, revision: str) -> None:
    async def update() -> None:
        url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
        conn = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
        finally:
            await conn.close()

    asyncio.run(update())


def _waits(settings: Settings) -> bool:
    return asyncio.run(wait_for_schema(settings, within=0.3, poll=0.1))


def test_holds_while_the_database_is_missing(fresh: Settings) -> None:
    assert _waits(fresh) is False


def test_lets_go_at_the_image_head_and_holds_below_it(fresh: Settings) -> None:
    migrate(fresh)
    assert _waits(fresh) is True
    heads, known = image_revisions()
    _set_revision(fresh, sorted(known - heads)[-1])
    assert _waits(fresh) is False


def test_lets_go_on_a_revision_newer_than_the_image(fresh: Settings) -> None:
    migrate(fresh)
    _set_revision(fresh, "9999_from_a_newer_release")
    assert _waits(fresh) is True


def test_the_command_exits_1_on_timeout_and_0_once_migrated(
    fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HERALD_DATABASE_URL", fresh.sqlalchemy_url)
    monkeypatch.setenv("HERALD_LINK_SECRET", "l" * 32)
    monkeypatch.setenv("HERALD_JWT_SECRET", "j" * 32)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as timed_out:
            cli.main(["wait-for-schema", "--timeout", "0.2"])
        assert timed_out.value.code == 1
        migrate(fresh)
        with pytest.raises(SystemExit) as ready:
            cli.main(["wait-for-schema", "--timeout", "5"])
        assert ready.value.code == 0
    finally:
        get_settings.cache_clear()

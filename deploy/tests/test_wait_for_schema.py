"""The API pod's init container (deploy/k8s/base/wait_for_schema.py) on a real PostgreSQL.

It must hold a new API pod while its database lacks the image's schema (no
database, an empty one, an older revision) and let it start once the
migration reached the image's head, or a revision newer than the image knows
(old pods restarting after a newer release migrated).
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from herald_api.core.migrate import migrate
from herald_api.core.settings import Settings
from herald_testing.backends import admin
from herald_testing.messages import LINK_SECRET

SCRIPT = Path(__file__).resolve().parents[1] / "k8s" / "base" / "wait_for_schema.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wait_for_schema", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wait_for_schema = _load()


@pytest.fixture
def database_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A URL of a database not created yet, set as the init container's env; dropped after."""
    name = f"herald_k8s_wait_{uuid.uuid4().hex[:8]}"
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name)
    rendered = url.render_as_string(hide_password=False)
    monkeypatch.setenv("HERALD_DATABASE_URL", rendered)
    monkeypatch.setattr(wait_for_schema, "POLL_SECONDS", 0.1)
    yield rendered
    asyncio.run(admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _migrate(url: str) -> None:
    migrate(Settings(database_url=url, link_secret=LINK_SECRET, jwt_secret="j" * 32))


async def _set_revision(url: str, revision: str) -> None:
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


def test_waits_while_the_database_is_missing(database_url: str) -> None:
    assert asyncio.run(wait_for_schema.wait(0.3)) is False


def test_passes_at_the_image_head_and_waits_below_it(database_url: str) -> None:
    _migrate(database_url)
    assert asyncio.run(wait_for_schema.wait(0.3)) is True
    heads, known = wait_for_schema.image_revisions()
    older = sorted(known - heads)[-1]
    asyncio.run(_set_revision(database_url, older))
    assert asyncio.run(wait_for_schema.wait(0.3)) is False


def test_passes_on_a_newer_revision(database_url: str) -> None:
    _migrate(database_url)
    asyncio.run(_set_revision(database_url, "9999_from_a_newer_release"))
    assert asyncio.run(wait_for_schema.wait(0.3)) is True


def test_exit_status(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_SCHEMA_WAIT_SECONDS", "0.2")
    assert wait_for_schema.main() == 1
    _migrate(database_url)
    assert wait_for_schema.main() == 0

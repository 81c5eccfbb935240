"""``POST /internal/v1/sessions/purge``: the scheduler's way to delete sessions that ended
long ago. Time is controlled by back-dating rows."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import jwt
import pytest
from pydantic import SecretStr

from herald_api.auth import housekeeping
from herald_api.core.settings import Settings
from herald_testing.accounts import add_user, log_in
from herald_testing.clients import OpenClient

TOKEN = "internal-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PURGE = "/internal/v1/sessions/purge"
WEEK = 7 * 24 * 3600


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


def sid(tokens: dict[str, str]) -> uuid.UUID:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return uuid.UUID(claims["sid"])


async def session(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    *,
    last_used: str = "0 days",
    expires_in: str = "80 days",
    revoked: str | None = None,
) -> uuid.UUID:
    """Log in, then back-date the new session: last used ``last_used`` ago, ending in
    ``expires_in`` (negative: ended that long ago), revoked ``revoked`` ago."""
    session_id = sid(await log_in(client))
    await db.execute(
        "UPDATE sessions SET last_used_at = now() - $2::text::interval, "
        "expires_at = now() + $3::text::interval, "
        "revoked_at = now() - $4::text::interval, "
        "revoked_reason = CASE WHEN $4::text IS NULL THEN NULL ELSE 'logout' END WHERE id = $1",
        session_id,
        last_used,
        expires_in,
        revoked,
    )
    return session_id


async def purge(client: httpx.AsyncClient, older_than: int = WEEK) -> int:
    response = await client.post(PURGE, json={"older_than_seconds": older_than}, headers=AUTH)
    assert response.status_code == 200, response.text
    deleted: int = response.json()["deleted"]
    return deleted


async def left(db: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await db.fetch("SELECT id FROM sessions")}


async def test_sessions_ended_longer_ago_than_the_age_are_deleted_and_no_other(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    assert settings.session_idle_days == 30
    # Each one ended more than a week ago, by one rule only.
    expired = await session(client, db, last_used="10 days", expires_in="-8 days")
    idle_expired = await session(client, db, last_used="38 days")  # idle since 8 days
    revoked_long_ago = await session(client, db, last_used="9 days", revoked="8 days")
    # Ended less than a week ago: kept for now.
    revoked_recently = await session(client, db, last_used="2 days", revoked="1 day")
    expired_recently = await session(client, db, last_used="3 days", expires_in="-1 day")
    idle_recently = await session(client, db, last_used="32 days")
    # In force: never touched.
    live = await session(client, db)
    nearly_idle = await session(client, db, last_used="29 days", expires_in="1 hour")

    assert await purge(client) == 3

    assert await left(db) == {
        revoked_recently,
        expired_recently,
        idle_recently,
        live,
        nearly_idle,
    }
    assert not await left(db) & {expired, idle_expired, revoked_long_ago}
    assert await purge(client) == 0

    # At the smallest age, every session that ended goes; those in force stay.
    assert await purge(client, older_than=60) == 3
    assert await left(db) == {live, nearly_idle}


async def test_the_live_sessions_still_work_after_a_purge(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    tokens = await log_in(client)
    await session(client, db, last_used="40 days")

    assert await purge(client, older_than=60) == 1

    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    listed = await client.get(
        "/api/v1/users/me/sessions",
        headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"},
    )
    assert [row["id"] for row in listed.json()] == [str(sid(tokens))]


async def test_the_idle_time_is_the_apis_setting(
    settings: Settings, open_client: OpenClient, db: asyncpg.Connection
) -> None:
    async with open_client(settings.model_copy(update={"session_idle_days": 3})) as client:
        await add_user(db, settings)
        idle_long_ago = await session(client, db, last_used="11 days")  # idle since 8 days
        idle_recently = await session(client, db, last_used="9 days")  # idle since 6 days

        assert await purge(client) == 1

    assert await left(db) == {idle_recently}
    assert idle_long_ago not in await left(db)


async def test_a_long_backlog_is_purged_in_several_transactions(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_BATCH_SIZE", 2)
    await add_user(db, settings)
    for _ in range(5):
        await session(client, db, last_used="9 days", revoked="8 days")
    live = await session(client, db)

    assert await purge(client) == 5
    assert await left(db) == {live}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer internal-token-for-tests-onlY"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "no-scheme"],
)
async def test_the_purge_needs_the_internal_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, headers: dict[str, str]
) -> None:
    await add_user(db, settings)
    ended = await session(client, db, last_used="9 days", revoked="8 days")

    response = await client.post(PURGE, json={"older_than_seconds": WEEK}, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await left(db) == {ended}


async def test_without_a_configured_token_the_purge_does_not_exist(
    no_token_client: httpx.AsyncClient,
) -> None:
    response = await no_token_client.post(PURGE, json={"older_than_seconds": WEEK}, headers=AUTH)

    assert response.status_code == 404
    schema = (await no_token_client.get("/openapi.json")).json()
    assert PURGE not in schema["paths"]


@pytest.mark.parametrize("body", [{}, {"older_than_seconds": 59}])
async def test_an_age_under_a_minute_or_missing_is_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post(PURGE, json=body, headers=AUTH)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "older_than_seconds"]]

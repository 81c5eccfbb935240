"""Rate limits of POST /api/v1/auth/refresh, per client address and per session, through
the real endpoint: a refused refresh changes nothing, and Redis down refuses nothing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_api.main import create_app
from herald_testing.accounts import add_user, bearer, log_in, me, refresh
from herald_testing.ports import free_port
from herald_testing.ratelimits import assert_too_many, let_through

SESSIONS_URL = "/api/v1/users/me/sessions"
INVALID_REFRESH = {"detail": "The refresh token is invalid or expired; log in again."}
GENEROUS = "1000/minute"


def assert_refused(response: httpx.Response, *, window_seconds: int) -> int:
    """A 429 (``assert_too_many``) that echoes no refresh token; its ``Retry-After``."""
    retry_after = assert_too_many(response, window_seconds=window_seconds)
    assert "refresh_token" not in response.text
    return retry_after


OpenFrom = Callable[..., AbstractAsyncContextManager[Callable[[str], httpx.AsyncClient]]]


def limited(settings: Settings, **update: Any) -> Settings:
    """``settings`` with rate limits on: generous but for those in ``update``."""
    return settings.model_copy(
        update={
            "rate_limits_enabled": True,
            "rate_limit_login_per_client": GENEROUS,
            "rate_limit_login_per_email": GENEROUS,
            "rate_limit_refresh_per_client": GENEROUS,
            "rate_limit_refresh_per_session": GENEROUS,
            # These tests count limits, not the fail-open path: a loaded machine
            # must not turn a slow Redis answer into an unlimited attempt.
            "rate_limit_timeout_seconds": 5.0,
        }
        | update
    )


@pytest.fixture
def open_from() -> OpenFrom:
    """An app built from the settings given, and HTTP clients of it from any address."""

    @asynccontextmanager
    async def open_app(
        settings: Settings,
    ) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
        opened: list[httpx.AsyncClient] = []
        async with LifespanManager(create_app(settings)) as manager:

            def client_from(address: str) -> httpx.AsyncClient:
                transport = httpx.ASGITransport(app=manager.app, client=(address, 50_000))
                http = httpx.AsyncClient(transport=transport, base_url="http://herald.test")
                opened.append(http)
                return http

            try:
                yield client_from
            finally:
                for http in opened:
                    await http.aclose()

    return open_app


async def refreshed(client: httpx.AsyncClient, refresh_token: str) -> dict[str, str]:
    """Refresh, which must succeed: the new pair."""
    response = await refresh(client, refresh_token)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def sessions_seen(client: httpx.AsyncClient, access_token: str) -> list[dict[str, Any]]:
    response = await client.get(SESSIONS_URL, headers=bearer(access_token))
    assert response.status_code == 200
    listed: list[dict[str, Any]] = response.json()
    return listed


async def test_one_session_over_its_limit_is_refused_while_another_session_refreshes(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    async with open_from(limited(settings, rate_limit_refresh_per_session="3/minute")) as client:
        http = client("198.51.100.10")
        laptop, phone = await log_in(http), await log_in(http)

        token = laptop["refresh_token"]
        for _ in range(3):
            token = (await refreshed(http, token))["refresh_token"]
        with capture_logs() as logs:
            refused = await refresh(http, token)
        assert_refused(refused, window_seconds=60)

        # The same client's other session has a budget of its own.
        phone_pair = await refreshed(http, phone["refresh_token"])
        assert await me(http, phone_pair["access_token"]) == 200

    [line] = [line for line in logs if line["event"] == "rate_limit.exceeded"]
    assert (line["action"], line["scope"]) == ("refresh", "session")
    assert token not in repr(logs)
    assert hashlib.sha256(token.encode()).hexdigest() not in repr(logs)


async def test_one_client_over_its_limit_is_refused_whatever_the_session(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    await add_user(db, settings, email="grace@example.com")
    async with open_from(limited(settings, rate_limit_refresh_per_client="4/minute")) as client:
        busy = client("2001:db8:7:7::1")
        ada, grace = await log_in(busy), await log_in(busy, email="grace@example.com")

        ada_token = (await refreshed(busy, ada["refresh_token"]))["refresh_token"]
        grace_token = (await refreshed(busy, grace["refresh_token"]))["refresh_token"]
        # An unknown token gets the one 401, and counts against the client too.
        unknown = await refresh(busy, "not-a-token-of-any-session")
        assert (unknown.status_code, unknown.json()) == (401, INVALID_REFRESH)
        ada_token = (await refreshed(busy, ada_token))["refresh_token"]

        # Another address of the same /64 is the same client; either session is refused.
        same_block = client("2001:db8:7:7::2")
        assert_refused(await refresh(same_block, grace_token), window_seconds=60)
        assert_refused(await refresh(busy, ada_token), window_seconds=60)
        assert_refused(await refresh(busy, "not-a-token-of-any-session"), window_seconds=60)

        # The tokens are untouched: from another network they still refresh.
        elsewhere = client("203.0.113.50")
        await refreshed(elsewhere, ada_token)
        await refreshed(elsewhere, grace_token)


async def test_a_refused_refresh_changes_nothing_and_the_token_works_after_the_window(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    # No grace window: had the refused refresh rotated the token, presenting it
    # again would be a reuse and would end the session.
    strict = limited(settings, rate_limit_refresh_per_session="1/2seconds", refresh_grace_seconds=0)
    async with open_from(strict) as client:
        http = client("198.51.100.20")
        pair = await refreshed(http, (await log_in(http))["refresh_token"])
        [before] = await sessions_seen(http, pair["access_token"])

        retry_after = assert_refused(await refresh(http, pair["refresh_token"]), window_seconds=2)
        assert_refused(await refresh(http, pair["refresh_token"]), window_seconds=2)

        # The session goes on, untouched: its access token works, the list shows it
        # as last used at the last refresh that succeeded.
        assert await me(http, pair["access_token"]) == 200
        assert await sessions_seen(http, pair["access_token"]) == [before]

        await asyncio.sleep(retry_after + 0.05)
        again = await refreshed(http, pair["refresh_token"])
        assert await me(http, again["access_token"]) == 200
        # and the rotation it made is the usual one: the new token refreshes next.
        await asyncio.sleep(2.05)
        await refreshed(http, again["refresh_token"])


async def test_a_refused_refresh_is_no_reuse_for_a_fresh_limiter_either(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    strict = limited(settings, rate_limit_refresh_per_session="1/hour", refresh_grace_seconds=0)
    async with open_from(strict) as client:
        http = client("198.51.100.21")
        pair = await refreshed(http, (await log_in(http))["refresh_token"])
        assert_refused(await refresh(http, pair["refresh_token"]), window_seconds=3600)

    # A deployment with fresh counts (here: another namespace) takes the same token.
    fresh = strict.model_copy(update={"queue_namespace": f"{settings.queue_namespace}-fresh"})
    async with open_from(fresh) as client:
        http = client("198.51.100.21")
        again = await refreshed(http, pair["refresh_token"])
        assert await me(http, again["access_token"]) == 200


async def test_the_default_limits_let_two_tabs_race_and_reload(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    defaults = settings.model_copy(
        update={"rate_limits_enabled": True, "rate_limit_timeout_seconds": 5.0}
    )
    async with open_from(defaults) as client:
        http = client("198.51.100.22")
        token = (await log_in(http))["refresh_token"]
        # Two tabs refresh with the same token at once; both are answered (grace window).
        answers = await asyncio.gather(refresh(http, token), refresh(http, token))
        assert [answer.status_code for answer in answers] == [200, 200]
        # The one the row lock let through last holds the session's current token.
        current = await db.fetchval("SELECT token_hash FROM sessions")
        [token] = [
            answer.json()["refresh_token"]
            for answer in answers
            if hashlib.sha256(answer.json()["refresh_token"].encode()).hexdigest() == current
        ]
        # A few reloads in a row, each refreshing.
        for _ in range(5):
            token = (await refreshed(http, token))["refresh_token"]


async def test_with_redis_down_refreshes_go_on(
    open_from: OpenFrom, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, email="ada@example.com")
    down = limited(
        settings,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        rate_limit_refresh_per_client="1/hour",
        rate_limit_refresh_per_session="1/hour",
        rate_limit_timeout_seconds=0.25,
    )
    failed_before = let_through("refresh")
    async with open_from(down) as client:
        http = client("198.51.100.23")
        token = (await log_in(http))["refresh_token"]
        for _ in range(3):
            pair = await refreshed(http, token)
            token = pair["refresh_token"]
            assert await me(http, pair["access_token"]) == 200

    # Each one let through unchecked, and counted so (the login's failure paused the
    # limiter: the refreshes are skipped, "paused", or probe Redis again, "redis").
    assert let_through("refresh") >= failed_before + 3


async def test_429_of_the_refresh_is_documented_with_retry_after(
    open_from: OpenFrom, settings: Settings
) -> None:
    async with open_from(settings) as client:
        schema = (await client("127.0.0.1").get("/openapi.json")).json()

    answer = schema["paths"]["/api/v1/auth/refresh"]["post"]["responses"]["429"]
    assert "session" in answer["description"]
    assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}

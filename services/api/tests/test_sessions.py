"""Sessions: refresh tokens (rotation, grace window, reuse detection), logout, the session
list, ending sessions, and expiry."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import jwt
import pytest
from saq import Queue
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_shared.messages import SessionReuseEmail
from herald_shared.tasks import SEND_SESSION_REUSE_EMAIL
from herald_testing.accounts import add_user, bearer, me, refresh
from herald_testing.accounts import log_in as log_in_as
from herald_testing.clients import OpenClient
from herald_testing.jobs import queued
from herald_testing.ports import free_port

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a quite different passphrase"
EMAIL = "ada@example.com"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"
SESSIONS_URL = "/api/v1/users/me/sessions"
INVALID_REFRESH = {"detail": "The refresh token is invalid or expired; log in again."}


async def log_in(
    client: httpx.AsyncClient, *, email: str = EMAIL, user_agent: str = "test-agent/1.0"
) -> dict[str, str]:
    """Log in from a client that names itself (the session list shows it)."""
    return await log_in_as(client, email=email, user_agent=user_agent)


def secrets_of(tokens: dict[str, str]) -> list[str]:
    """The token material of a login's or refresh's answer."""
    return [tokens["access_token"], tokens["refresh_token"]]


def sid(access_token: str) -> uuid.UUID:
    return uuid.UUID(jwt.decode(access_token, options={"verify_signature": False})["sid"])


@pytest.fixture
async def no_grace_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that accepts a replaced refresh token not even once."""
    async with open_client(settings.model_copy(update={"refresh_grace_seconds": 0})) as http:
        yield http


# --- logging in starts a session ------------------------------------------------------------


async def test_login_starts_a_session_storing_only_the_tokens_hash(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(db, settings)

    tokens = await log_in(client, user_agent="x" * 300)

    refresh_token = tokens["refresh_token"]
    assert len(refresh_token) >= 43  # 32 bytes, base64url
    [row] = await db.fetch("SELECT * FROM sessions")
    assert row["id"] == sid(tokens["access_token"])
    assert row["user_id"] == user_id
    assert row["token_hash"] == hashlib.sha256(refresh_token.encode()).hexdigest()
    assert refresh_token not in repr(dict(row))
    assert row["user_agent"] == "x" * 256
    assert row["client_network"] == "127.0.0.1"
    assert (row["expires_at"] - row["created_at"]).days == settings.session_max_days


# --- rotation, grace window, reuse ----------------------------------------------------------


async def test_a_refresh_rotates_both_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    first = await log_in(client)

    response = await refresh(client, first["refresh_token"])

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert second["refresh_token"] != first["refresh_token"]
    assert sid(second["access_token"]) == sid(first["access_token"])
    assert await me(client, second["access_token"]) == 200
    # and the new refresh token is the one that refreshes now
    assert (await refresh(client, second["refresh_token"])).status_code == 200


async def reuse_emails(queue: Queue) -> list[SessionReuseEmail]:
    """The reuse emails queued for the notifier, oldest first."""
    return [
        SessionReuseEmail.decode(payload)
        for payload in await queued(queue, SEND_SESSION_REUSE_EMAIL.name)
    ]


async def test_an_old_refresh_token_after_the_grace_window_ends_the_session(
    no_grace_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    notifier_queue: Queue,
) -> None:
    client = no_grace_client
    user_id = await add_user(db, settings)
    first = await log_in(client, user_agent="Firefox/133.0 (Android 15)")
    second = (await refresh(client, first["refresh_token"])).json()

    with capture_logs() as logs:
        replayed = await refresh(client, first["refresh_token"])

    assert replayed.status_code == 401
    assert replayed.json() == INVALID_REFRESH
    # The whole family is gone: the newest refresh token and the access tokens too.
    assert (await refresh(client, second["refresh_token"])).status_code == 401
    assert await me(client, second["access_token"]) == 401
    row = await db.fetchrow("SELECT revoked_at, revoked_reason FROM sessions")
    assert row is not None
    assert row["revoked_reason"] == "reuse"
    [event] = [entry for entry in logs if entry["event"] == "session.reuse_detected"]
    assert event["user_id"] == str(user_id)
    assert event["session_id"] == str(sid(first["access_token"]))
    assert first["refresh_token"] not in repr(logs)
    # The owner is told which session it was, in their language, once.
    [notice] = await reuse_emails(notifier_queue)
    assert (notice.user_id, notice.email, notice.locale) == (user_id, EMAIL, "en")
    assert notice.user_agent == "Firefox/133.0 (Android 15)"
    assert notice.client_network == "127.0.0.1"
    started = await db.fetchval("SELECT created_at FROM sessions")
    assert notice.session_started_at == started
    assert event["message_id"] == str(notice.message_id)
    assert (
        await db.fetchval("SELECT count(*) FROM outbox WHERE message_id = $1", notice.message_id)
        == 1
    )
    for token in (*secrets_of(first), *secrets_of(second)):
        assert token not in repr(notice.encode())
    # Replaying again finds the session ended: no second email.
    assert (await refresh(client, first["refresh_token"])).status_code == 401
    assert len(await reuse_emails(notifier_queue)) == 1


async def test_any_earlier_token_of_the_family_ends_the_session_however_old(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    notifier_queue: Queue,
) -> None:
    await add_user(db, settings)
    first = await log_in(client)
    tokens = [first]
    for _ in range(3):
        answer = await refresh(client, tokens[-1]["refresh_token"])
        assert answer.status_code == 200
        tokens.append(answer.json())
    # Three rotations: the first token is two generations past "previous".
    assert await db.fetchval("SELECT count(*) FROM retired_refresh_tokens") == 2
    stored = {
        row["token_hash"] for row in await db.fetch("SELECT token_hash FROM retired_refresh_tokens")
    }
    assert first["refresh_token"] not in repr(stored)

    replayed = await refresh(client, first["refresh_token"])

    assert replayed.status_code == 401
    assert await db.fetchval("SELECT revoked_reason FROM sessions") == "reuse"
    assert (await refresh(client, tokens[-1]["refresh_token"])).status_code == 401
    assert await me(client, tokens[-1]["access_token"]) == 401
    assert len(await reuse_emails(notifier_queue)) == 1
    # The session's end is final: its retired tokens answer like unknown ones, silently.
    assert (await refresh(client, tokens[1]["refresh_token"])).status_code == 401
    assert len(await reuse_emails(notifier_queue)) == 1
    await db.execute("DELETE FROM sessions")
    assert await db.fetchval("SELECT count(*) FROM retired_refresh_tokens") == 0


async def test_with_redis_down_a_reuse_still_ends_the_session_and_its_email_waits(
    settings: Settings, open_client: OpenClient, db: asyncpg.Connection
) -> None:
    down = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "refresh_grace_seconds": 0}
    )
    await add_user(db, settings)
    async with open_client(down) as client:
        first = await log_in(client)
        assert (await refresh(client, first["refresh_token"])).status_code == 200

        replayed = await refresh(client, first["refresh_token"])

    assert replayed.status_code == 401
    assert await db.fetchval("SELECT revoked_reason FROM sessions") == "reuse"
    # Committed with the session's end: the relay pushes it once Redis is back.
    row = await db.fetchrow("SELECT task, relayed_at FROM outbox")
    assert row is not None
    assert (row["task"], row["relayed_at"]) == (SEND_SESSION_REUSE_EMAIL.name, None)


async def test_within_the_grace_window_the_replaced_token_gets_a_fresh_pair(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    first = await log_in(client)
    assert (await refresh(client, first["refresh_token"])).status_code == 200

    again = await refresh(client, first["refresh_token"])

    assert again.status_code == 200
    latest = again.json()
    assert await me(client, latest["access_token"]) == 200
    assert (await refresh(client, latest["refresh_token"])).status_code == 200
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None


async def test_the_grace_window_closes(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    first = await log_in(client)
    second = (await refresh(client, first["refresh_token"])).json()
    await db.execute(
        "UPDATE sessions SET rotated_at = rotated_at - make_interval(secs => $1)",
        settings.refresh_grace_seconds + 1,
    )

    assert (await refresh(client, first["refresh_token"])).status_code == 401
    assert (await refresh(client, second["refresh_token"])).status_code == 401


async def test_two_refreshes_at_once_both_succeed_within_the_grace_window(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    token = (await log_in(client))["refresh_token"]

    answers = await asyncio.gather(refresh(client, token), refresh(client, token))

    assert [answer.status_code for answer in answers] == [200, 200]
    # The row lock serialised them: the later one's refresh token is the current one.
    hashes = {hashlib.sha256(a.json()["refresh_token"].encode()).hexdigest() for a in answers}
    current = await db.fetchval("SELECT token_hash FROM sessions")
    assert current in hashes
    assert await db.fetchval("SELECT revoked_at FROM sessions") is None


async def test_two_refreshes_at_once_without_grace_one_wins_and_the_session_ends(
    no_grace_client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    notifier_queue: Queue,
) -> None:
    client = no_grace_client
    await add_user(db, settings)
    token = (await log_in(client))["refresh_token"]

    answers = await asyncio.gather(refresh(client, token), refresh(client, token))

    assert sorted(answer.status_code for answer in answers) == [200, 401]
    assert await db.fetchval("SELECT revoked_reason FROM sessions") == "reuse"
    assert len(await reuse_emails(notifier_queue)) == 1


async def test_unknown_and_malformed_refresh_tokens_get_one_answer(
    client: httpx.AsyncClient,
) -> None:
    unknown = await refresh(client, "not-a-token")
    assert unknown.status_code == 401
    assert unknown.json() == INVALID_REFRESH
    assert (await client.post(REFRESH_URL, json={})).status_code == 422
    too_long = await refresh(client, "secret-" * 30)
    assert too_long.status_code == 422
    assert "secret-" not in too_long.text


# --- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "back_dating",
    [
        "last_used_at = now() - make_interval(days => $1 + 1)",  # idle
        "expires_at = now() - make_interval(secs => 1 + $1 * 0)",  # absolute
    ],
    ids=["idle", "absolute"],
)
async def test_an_expired_session_refreshes_no_more(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, back_dating: str
) -> None:
    await add_user(db, settings)
    tokens = await log_in(client)
    assert (await refresh(client, tokens["refresh_token"])).status_code == 200
    tokens = await log_in(client)
    await db.execute(
        f"UPDATE sessions SET {back_dating} WHERE id = $2",  # constants only
        settings.session_idle_days,
        sid(tokens["access_token"]),
    )

    assert (await refresh(client, tokens["refresh_token"])).json() == INVALID_REFRESH
    assert await me(client, tokens["access_token"]) == 401
    other = await log_in(client)
    listed = (await client.get(SESSIONS_URL, headers=bearer(other["access_token"]))).json()
    assert sid(tokens["access_token"]) not in {uuid.UUID(s["id"]) for s in listed}


# --- logout, the list, ending sessions ------------------------------------------------------


async def test_logout_stops_the_sessions_tokens_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    tokens = await log_in(client)
    other = await log_in(client)

    response = await client.post(LOGOUT_URL, headers=bearer(tokens["access_token"]))

    assert response.status_code == 204
    assert await me(client, tokens["access_token"]) == 401
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401
    assert await me(client, other["access_token"]) == 200
    assert (await client.post(LOGOUT_URL)).status_code == 401


async def test_the_list_shows_the_callers_sessions_without_token_material(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    await add_user(db, settings, email="grace@example.com")
    phone = await log_in(client, user_agent="Phone/2")
    laptop = await log_in(client, user_agent="Laptop/1")
    await log_in(client, email="grace@example.com")

    response = await client.get(SESSIONS_URL, headers=bearer(laptop["access_token"]))

    assert response.status_code == 200
    listed = response.json()
    assert {entry["user_agent"]: entry["current"] for entry in listed} == {
        "Laptop/1": True,
        "Phone/2": False,
    }
    assert set(listed[0]) == {
        "id",
        "created_at",
        "last_used_at",
        "expires_at",
        "user_agent",
        "client_network",
        "current",
    }
    assert {entry["client_network"] for entry in listed} == {"127.0.0.1"}
    for tokens in (phone, laptop):
        for secret in secrets_of(tokens):
            assert secret not in response.text


async def test_ending_one_session_stops_its_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    await add_user(db, settings, email="grace@example.com")
    phone = await log_in(client)
    laptop = await log_in(client)
    graces = await log_in(client, email="grace@example.com")
    phone_id = sid(phone["access_token"])

    ended = await client.delete(
        f"{SESSIONS_URL}/{phone_id}", headers=bearer(laptop["access_token"])
    )

    assert ended.status_code == 204
    assert await me(client, phone["access_token"]) == 401
    assert (await refresh(client, phone["refresh_token"])).status_code == 401
    assert await me(client, laptop["access_token"]) == 200
    again = await client.delete(
        f"{SESSIONS_URL}/{phone_id}", headers=bearer(laptop["access_token"])
    )
    assert again.status_code == 404
    foreign = await client.delete(
        f"{SESSIONS_URL}/{sid(graces['access_token'])}", headers=bearer(laptop["access_token"])
    )
    assert foreign.status_code == 404
    assert await me(client, graces["access_token"]) == 200


async def test_ending_the_others_keeps_only_the_current_session(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    others = [await log_in(client), await log_in(client)]
    current = await log_in(client)

    response = await client.delete(SESSIONS_URL, headers=bearer(current["access_token"]))

    assert response.status_code == 204
    for other in others:
        assert await me(client, other["access_token"]) == 401
        assert (await refresh(client, other["refresh_token"])).status_code == 401
    listed = (await client.get(SESSIONS_URL, headers=bearer(current["access_token"]))).json()
    assert [entry["id"] for entry in listed] == [str(sid(current["access_token"]))]
    assert (await refresh(client, current["refresh_token"])).status_code == 200


# --- what else ends sessions ----------------------------------------------------------------


async def test_a_password_change_ends_every_session_and_keeps_the_device_signed_in(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    phone = await log_in(client, user_agent="phone/1.0")
    laptop = await log_in(client, user_agent="laptop/1.0")

    changed = await client.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(laptop["access_token"]) | {"User-Agent": "laptop/1.0"},
    )

    assert changed.status_code == 200
    fresh = changed.json()
    assert set(fresh) == {"access_token", "token_type", "expires_in", "refresh_token"}
    for old in (phone, laptop):
        assert (await refresh(client, old["refresh_token"])).status_code == 401
        assert await me(client, old["access_token"]) == 401
    ended = await db.fetch("SELECT revoked_reason FROM sessions WHERE revoked_at IS NOT NULL")
    assert [row["revoked_reason"] for row in ended] == ["password_changed"] * 2
    # The device that changed it has a session of its own, listed as current.
    assert await me(client, fresh["access_token"]) == 200
    listed = (await client.get(SESSIONS_URL, headers=bearer(fresh["access_token"]))).json()
    assert [(entry["user_agent"], entry["current"]) for entry in listed] == [("laptop/1.0", True)]
    assert (await refresh(client, fresh["refresh_token"])).status_code == 200


async def test_deleting_the_account_deletes_its_sessions(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    tokens = await log_in(client)

    await db.execute("DELETE FROM users")

    assert await db.fetchval("SELECT count(*) FROM sessions") == 0
    assert (await refresh(client, tokens["refresh_token"])).status_code == 401


# --- secrets and the contract ---------------------------------------------------------------


async def test_no_refresh_or_access_token_is_logged(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_user(db, settings)
    caplog.set_level("DEBUG")

    with capture_logs() as logs:
        first = await log_in(client)
        second = (await refresh(client, first["refresh_token"])).json()
        await client.get(SESSIONS_URL, headers=bearer(second["access_token"]))
        await refresh(client, "forged-" + first["refresh_token"])
        await client.post(LOGOUT_URL, headers=bearer(second["access_token"]))
        await refresh(client, second["refresh_token"])

    events = [entry["event"] for entry in logs]
    for event in ("session.started", "session.refreshed", "session.ended"):
        assert event in events
    logged = repr(logs) + caplog.text
    for token in (*secrets_of(first), *secrets_of(second)):
        assert token not in logged
        assert hashlib.sha256(token.encode()).hexdigest() not in logged


async def test_the_new_routes_are_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert "post" in paths[REFRESH_URL]
    assert "post" in paths[LOGOUT_URL]
    assert {"get", "delete"} <= set(paths[SESSIONS_URL])
    assert "delete" in paths[SESSIONS_URL + "/{session_id}"]
    assert "401" in paths[REFRESH_URL]["post"]["responses"]

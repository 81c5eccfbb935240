"""``Idempotency-Key`` on the POSTs that send email: a retry gets the first answer again
and causes nothing new; the same key with another body is 422; keys are scoped per route
and per caller; they expire, and the scheduler's purge removes them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from saq import Queue

from herald_api.accounts.idempotency import IdempotencyStore
from herald_api.core.settings import Settings
from herald_shared.tasks import (
    SEND_ACCOUNT_EXISTS_EMAIL,
    SEND_EMAIL_CHANGE_EMAIL,
    SEND_PASSWORD_RESET_EMAIL,
    SEND_VERIFICATION_EMAIL,
    SEND_WELCOME_EMAIL,
)
from herald_testing.clients import OpenClient

USERS = "/api/v1/users"
RESEND = "/api/v1/auth/verify/resend"
FORGOT = "/api/v1/auth/password/forgot"
CHANGE_EMAIL = "/api/v1/users/me/email"
PURGE = "/internal/v1/idempotency-keys/purge"
TOKEN = "internal-token-for-tests-only"
PASSWORD = "correct horse battery staple"
KEY = "5f1c2a9e-8c1e-4f5e-9d7b-2c3a4b5c6d7e"
REPLAYED = "Idempotent-Replayed"


def signup_body(email: str = "ada@example.com", **overrides: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "display_name": "Ada"} | overrides


def keyed(key: str = KEY) -> dict[str, str]:
    return {"Idempotency-Key": key}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


async def outbox_tasks(db: asyncpg.Connection) -> list[str]:
    return [row["task"] for row in await db.fetch("SELECT task FROM outbox ORDER BY created_at")]


async def queued(queue: Queue) -> list[str]:
    info = await queue.info(jobs=True, limit=1000)
    return sorted(job["function"] for job in info["jobs"])


async def test_a_retried_signup_gets_the_first_answer_and_emails_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    replays = REGISTRY.get_sample_value("herald_api_idempotency_total", {"outcome": "replayed"})
    first = await client.post(USERS, json=signup_body(), headers=keyed())
    retry = await client.post(USERS, json=signup_body(), headers=keyed())

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert REPLAYED not in first.headers
    assert retry.headers[REPLAYED] == "true"
    assert retry.headers["content-type"] == "application/json"
    # One account, one welcome email; the retry is no "address taken" signup.
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]
    assert await queued(notifier_queue) == [SEND_WELCOME_EMAIL.name]
    after = REGISTRY.get_sample_value("herald_api_idempotency_total", {"outcome": "replayed"})
    assert after == (replays or 0.0) + 1


async def test_without_a_key_a_repeat_is_a_new_request(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post(USERS, json=signup_body())
    repeat = await client.post(USERS, json=signup_body())

    assert REPLAYED not in repeat.headers
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name, SEND_ACCOUNT_EXISTS_EMAIL.name]


async def test_a_retried_signup_of_a_taken_address_tells_its_owner_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    await client.post(USERS, json=signup_body())
    for _ in range(3):
        response = await client.post(USERS, json=signup_body(), headers=keyed())
        assert response.status_code == 202

    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name, SEND_ACCOUNT_EXISTS_EMAIL.name]
    assert await queued(notifier_queue) == [SEND_ACCOUNT_EXISTS_EMAIL.name, SEND_WELCOME_EMAIL.name]
    # The key's row belongs to the owner's account (its answer holds that address).
    owner = await db.fetchval("SELECT id FROM users")
    assert await db.fetchval("SELECT user_id FROM idempotency_keys") == owner


async def test_the_same_key_with_another_body_is_422_and_does_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post(USERS, json=signup_body(), headers=keyed())
    other = await client.post(USERS, json=signup_body("grace@example.com"), headers=keyed())

    assert other.status_code == 422
    assert other.json() == {
        "detail": "This Idempotency-Key was already used with another request body. Send a "
        "new key with each new request, and the same body with each retry."
    }
    assert REPLAYED not in other.headers
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]


async def test_key_order_and_spacing_of_the_body_do_not_count(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    json_headers = keyed() | {"Content-Type": "application/json"}
    await client.post(
        USERS,
        content=f'{{"email": "ada@example.com", "password": "{PASSWORD}", "display_name": "Ada"}}',
        headers=json_headers,
    )
    retry = await client.post(
        USERS,
        content=f'{{"display_name":"Ada","password":"{PASSWORD}","email":"ada@example.com"}}',
        headers=json_headers,
    )

    assert retry.status_code == 202
    assert retry.headers[REPLAYED] == "true"
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]


async def test_concurrent_duplicates_run_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    responses = await asyncio.gather(
        *(client.post(USERS, json=signup_body(), headers=keyed()) for _ in range(2))
    )

    assert [response.status_code for response in responses] == [202, 202]
    assert responses[0].json() == responses[1].json()
    assert sorted(str(response.headers.get(REPLAYED)) for response in responses) == [
        "None",
        "true",
    ]
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]
    assert await queued(notifier_queue) == [SEND_WELCOME_EMAIL.name]


@pytest.fixture
async def impatient_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that waits 0.2 s for a duplicate in flight."""
    async with open_client(settings.model_copy(update={"idempotency_wait_seconds": 0.2})) as http:
        yield http


async def test_a_duplicate_of_a_request_still_in_its_transaction_is_409(
    impatient_client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    # Another request holds the key: its row is written, its transaction still open.
    holder = await asyncpg.connect(database_url)
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute(
        "INSERT INTO idempotency_keys (key_hash, fingerprint, status_code, answer, expires_at) "
        "VALUES ($1, '\\x00', 202, '{}', now() + interval '1 day')",
        IdempotencyStore.key_hash(f"POST {USERS}", KEY),
    )
    try:
        response = await impatient_client.post(USERS, json=signup_body(), headers=keyed())
    finally:
        await transaction.rollback()
        await holder.close()

    assert response.status_code == 409
    assert response.headers["Retry-After"] == "1"
    assert "still being processed" in response.json()["detail"]
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await outbox_tasks(db) == []
    # The holder gave up: the key is free, and the retry runs.
    retry = await impatient_client.post(USERS, json=signup_body(), headers=keyed())
    assert retry.status_code == 202
    assert REPLAYED not in retry.headers
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]


async def test_an_expired_key_is_free_again(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post(USERS, json=signup_body(), headers=keyed())
    await db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")

    other = await client.post(USERS, json=signup_body("grace@example.com"), headers=keyed())

    assert other.status_code == 202
    assert REPLAYED not in other.headers
    assert await db.fetchval("SELECT count(*) FROM users") == 2
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 1
    fresh = "SELECT expires_at > now() + interval '23 hours' FROM idempotency_keys"
    assert await db.fetchval(fresh)


async def test_the_purge_deletes_only_keys_expired_long_enough(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    for number, email in enumerate(["ada@example.com", "grace@example.com", "edsger@x.org"]):
        await client.post(USERS, json=signup_body(email), headers=keyed(f"key-{number}"))
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '2 hours' "
        "WHERE user_id = (SELECT id FROM users WHERE email = 'ada@example.com')"
    )
    await db.execute(
        "UPDATE idempotency_keys SET expires_at = now() - interval '10 minutes' "
        "WHERE user_id = (SELECT id FROM users WHERE email = 'grace@example.com')"
    )

    response = await client.post(
        PURGE, json={"older_than_seconds": 3600}, headers={"Authorization": f"Bearer {TOKEN}"}
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": 1}
    left = await db.fetch(
        "SELECT email FROM idempotency_keys JOIN users ON users.id = user_id ORDER BY email"
    )
    assert [row["email"] for row in left] == ["edsger@x.org", "grace@example.com"]


async def test_only_a_fingerprint_of_the_body_is_stored(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post(USERS, json=signup_body(), headers=keyed())

    row = await db.fetchrow("SELECT * FROM idempotency_keys")
    assert len(row["key_hash"]) == len(row["fingerprint"]) == 32
    assert KEY.encode() not in row["key_hash"]
    assert PASSWORD not in str(dict(row))
    assert row["status_code"] == 202


@pytest.mark.parametrize(
    ("route", "task"),
    [(RESEND, SEND_VERIFICATION_EMAIL.name), (FORGOT, SEND_PASSWORD_RESET_EMAIL.name)],
    ids=["resend", "forgot"],
)
async def test_a_retried_email_request_sends_one_email(
    client: httpx.AsyncClient, db: asyncpg.Connection, route: str, task: str
) -> None:
    await client.post(USERS, json=signup_body())
    body = {"email": "ada@example.com"}

    first = await client.post(route, json=body, headers=keyed())
    retries = [await client.post(route, json=body, headers=keyed()) for _ in range(2)]

    assert [retry.json() for retry in retries] == [first.json()] * 2
    assert {retry.headers[REPLAYED] for retry in retries} == {"true"}
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name, task]
    another = await client.post(route, json=body, headers=keyed("another-key"))
    assert REPLAYED not in another.headers
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name, task, task]


async def test_a_request_that_sent_nothing_is_remembered_too(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = {"email": "ada@example.com"}
    await client.post(FORGOT, json=body, headers=keyed())  # no account yet: no email
    await client.post(USERS, json=signup_body())

    retry = await client.post(FORGOT, json=body, headers=keyed())

    assert retry.headers[REPLAYED] == "true"
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]


async def test_keys_are_scoped_by_route(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await client.post(USERS, json=signup_body(), headers=keyed())

    resend = await client.post(RESEND, json={"email": "ada@example.com"}, headers=keyed())

    assert resend.status_code == 202
    assert REPLAYED not in resend.headers
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name, SEND_VERIFICATION_EMAIL.name]


async def logged_in(client: httpx.AsyncClient, db: asyncpg.Connection, email: str) -> str:
    """Sign ``email`` up, verify it, log in: a bearer header."""
    assert (await client.post(USERS, json=signup_body(email))).status_code == 202
    await db.execute("UPDATE users SET email_verified_at = now() WHERE email = $1", email)
    response = await client.post(
        "/api/v1/auth/token", data={"username": email, "password": PASSWORD}
    )
    assert response.status_code == 200
    return f"Bearer {response.json()['access_token']}"


async def request_email_change(
    client: httpx.AsyncClient, bearer: str, new_email: str
) -> httpx.Response:
    return await client.post(
        CHANGE_EMAIL,
        json={"new_email": new_email, "password": PASSWORD},
        headers=keyed() | {"Authorization": bearer},
    )


async def change_links(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE task = $1", SEND_EMAIL_CHANGE_EMAIL.name
    )
    return count


async def test_an_authenticated_route_scopes_keys_per_caller(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    ada = await logged_in(client, db, "ada@example.com")
    grace = await logged_in(client, db, "grace@example.com")

    first = await request_email_change(client, ada, "ada@new.example")
    retry = await request_email_change(client, ada, "ada@new.example")
    # Another caller's same key and same body is hers: it neither replays Ada's answer
    # nor conflicts with it.
    theirs = await request_email_change(client, grace, "ada@new.example")

    assert first.status_code == retry.status_code == theirs.status_code == 202
    assert retry.headers[REPLAYED] == "true"
    assert REPLAYED not in theirs.headers
    assert await change_links(db) == 2
    owners = await db.fetch(
        "SELECT email FROM idempotency_keys JOIN users ON users.id = user_id "
        "WHERE status_code = 202 AND answer LIKE '%ada@new.example%' ORDER BY email"
    )
    assert [row["email"] for row in owners] == ["ada@example.com", "grace@example.com"]


async def test_deleting_an_account_deletes_its_keys(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    ada = await logged_in(client, db, "ada@example.com")
    await request_email_change(client, ada, "ada@new.example")
    await client.post(USERS, json=signup_body("grace@example.com"), headers=keyed("grace"))
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 2

    response = await client.request(
        "DELETE", "/api/v1/users/me", json={"password": PASSWORD}, headers={"Authorization": ada}
    )

    assert response.status_code == 204
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 1


@pytest.mark.parametrize(
    "key",
    ["x" * 256, "has space", '"unbalanced', "back\\slash", 'in"side', ""],
    ids=["too-long", "space", "unbalanced-quote", "backslash", "inner-quote", "empty"],
)
async def test_a_malformed_key_is_422_naming_the_header(
    client: httpx.AsyncClient, db: asyncpg.Connection, key: str
) -> None:
    response = await client.post(USERS, json=signup_body(), headers=keyed(key))

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["header", "Idempotency-Key"]]
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_quoted_key_is_the_same_key(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.post(USERS, json=signup_body(), headers=keyed("x" * 255))

    retry = await client.post(USERS, json=signup_body(), headers=keyed(f'"{"x" * 255}"'))

    assert retry.headers[REPLAYED] == "true"
    assert await outbox_tasks(db) == [SEND_WELCOME_EMAIL.name]


@pytest.mark.parametrize("path", [USERS, RESEND, FORGOT, CHANGE_EMAIL])
async def test_the_header_and_its_answers_are_documented(
    client: httpx.AsyncClient, path: str
) -> None:
    operation: dict[str, Any] = (await client.get("/openapi.json")).json()["paths"][path]["post"]

    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["in"] == "header"
    assert not header.get("required", False)
    assert "same key and the same body" in header["description"]
    assert {"202", "409", "422"} <= set(operation["responses"])
    assert REPLAYED in operation["responses"]["202"]["headers"]
    assert "another body" in operation["responses"]["422"]["description"]

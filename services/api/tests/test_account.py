"""The caller's own account: changing its password, deleting it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from saq import Queue, Status
from saq.queue.redis import RedisQueue
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_shared.ledger import (
    dead_letters_index_key,
    dead_letters_key,
    delivery_record_key,
    job_key,
)
from herald_shared.messages import EmailChangedEmail, EmailChangeEmail, PasswordChangedEmail
from herald_shared.tasks import (
    SEND_EMAIL_CHANGE_EMAIL,
    SEND_EMAIL_CHANGED_EMAIL,
    SEND_PASSWORD_CHANGED_EMAIL,
)
from herald_shared.tokens import derive
from herald_testing.clients import OpenClient
from herald_testing.ports import free_port

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
CHANGE_URL = "/api/v1/users/me/password"
ME_URL = "/api/v1/users/me"
WRONG_CURRENT = {"detail": "The password is not right."}


async def logged_in(client: httpx.AsyncClient, db: asyncpg.Connection) -> str:
    """Sign ``EMAIL`` up, verify it, log in: the access token."""
    body = {"email": EMAIL, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/api/v1/users", json=body)).status_code == 202
    await db.execute("UPDATE users SET email_verified_at = now()")
    response = await log_in(client, PASSWORD)
    assert response.status_code == 200
    return str(response.json()["access_token"])


async def log_in(client: httpx.AsyncClient, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": EMAIL, "password": password})


async def change(
    client: httpx.AsyncClient, token: str, current: str, new: str = NEW_PASSWORD
) -> httpx.Response:
    return await client.post(
        CHANGE_URL,
        json={"current_password": current, "new_password": new},
        headers={"Authorization": f"Bearer {token}"},
    )


async def me(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get(ME_URL, headers={"Authorization": f"Bearer {token}"})).status_code


async def notices(queue: Queue) -> list[PasswordChangedEmail]:
    info = await queue.info(jobs=True)
    return [
        PasswordChangedEmail.decode(job["kwargs"]["payload"])
        for job in info["jobs"]
        if job["function"] == SEND_PASSWORD_CHANGED_EMAIL.name
    ]


async def test_a_change_gives_a_fresh_session_and_ends_the_others(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)
    other_session = (await log_in(client, PASSWORD)).json()["access_token"]

    response = await change(client, token, PASSWORD)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    fresh = response.json()["access_token"]
    assert await me(client, fresh) == 200
    assert await me(client, token) == 401
    assert await me(client, other_session) == 401
    assert (await log_in(client, PASSWORD)).status_code == 401
    assert (await log_in(client, NEW_PASSWORD)).status_code == 200
    [notice] = await notices(notifier_queue)
    assert notice.email == EMAIL


async def test_a_wrong_current_password_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)

    response = await change(client, token, "not the password")

    assert response.status_code == 400
    assert response.json() == WRONG_CURRENT
    assert await me(client, token) == 200
    assert (await log_in(client, PASSWORD)).status_code == 200
    assert await notices(notifier_queue) == []


async def test_the_new_password_follows_the_signup_rules(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)

    response = await change(client, token, PASSWORD, new="password1")

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "new_password"], "password_too_common")
    assert PASSWORD not in response.text
    assert (await log_in(client, PASSWORD)).status_code == 200


async def test_without_a_valid_token_nothing_is_looked_at(client: httpx.AsyncClient) -> None:
    response = await change(client, "not-a-token", PASSWORD)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_two_changes_at_once_one_wins(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)

    first, second = await asyncio.gather(
        change(client, token, PASSWORD, new="first new passphrase"),
        change(client, token, PASSWORD, new="second new passphrase"),
    )

    # Both were checked against the same current password; only one replaced it.
    assert sorted([first.status_code, second.status_code]) == [200, 400]
    winner = "first new passphrase" if first.status_code == 200 else "second new passphrase"
    assert (await log_in(client, winner)).status_code == 200
    assert len(await notices(notifier_queue)) == 1


async def test_no_password_reaches_a_log_line(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)
    with capture_logs() as logs:
        await change(client, token, "a wrong current one")
        fresh = (await change(client, token, PASSWORD)).json()["access_token"]

    text = str(logs)
    for secret in (PASSWORD, NEW_PASSWORD, "a wrong current one", fresh, "$argon2"):
        assert secret not in text
    events = [entry["event"] for entry in logs]
    assert "password.confirmation_failed" in events
    assert "password.changed" in events


@pytest.fixture
async def limited_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose login limit per email address is 3 a minute."""
    limited = settings.model_copy(
        update={"rate_limits_enabled": True, "rate_limit_login_per_email": "3/minute"}
    )
    async with open_client(limited) as http:
        yield http


async def test_current_password_guesses_count_as_logins(
    limited_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(limited_client, db)  # one login

    guesses = [await change(limited_client, token, f"guess {n}") for n in range(3)]

    assert [guess.status_code for guess in guesses] == [400, 400, 429]
    assert "Retry-After" in guesses[-1].headers


# --- deleting one's account (confirmed with the password) -------------------------------------


async def delete_me(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.request(
        "DELETE",
        ME_URL,
        json={"password": password},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_deleting_the_account_removes_it_and_its_sessions(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)
    await client.post("/api/v1/auth/password/forgot", json={"email": EMAIL})

    response = await delete_me(client, token, PASSWORD)

    assert response.status_code == 204
    assert response.content == b""
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM email_tokens") == 0
    assert await me(client, token) == 401
    assert (await log_in(client, PASSWORD)).status_code == 401
    # The address is free again.
    body = {"email": EMAIL, "password": NEW_PASSWORD, "display_name": "Ada again"}
    assert (await client.post("/api/v1/users", json=body)).status_code == 202
    assert await db.fetchval("SELECT display_name FROM users") == "Ada again"


async def test_deleting_drops_the_accounts_outbox_messages_only(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)
    user_id = await db.fetchval("SELECT id FROM users")
    # One of this user's emails staged but not pushed yet (Redis was down, say),
    # and someone else's; the welcome email's row is there, pushed.
    await db.execute(
        "INSERT INTO outbox (message_id, task, queue, payload, user_id) VALUES "
        "(gen_random_uuid(), 'send_password_changed_email', 'notifier', $1::jsonb, $2), "
        "(gen_random_uuid(), 'send_password_changed_email', 'notifier', $3::jsonb, $4)",
        f'{{"user_id": "{user_id}"}}',
        user_id,
        '{"user_id": "00000000-0000-0000-0000-000000000001"}',
        uuid.UUID("00000000-0000-0000-0000-000000000001"),
    )
    assert await db.fetchval("SELECT count(*) FROM outbox") == 3

    assert (await delete_me(client, token, PASSWORD)).status_code == 204

    left = await db.fetch("SELECT payload->>'user_id' AS user_id FROM outbox")
    assert [row["user_id"] for row in left] == ["00000000-0000-0000-0000-000000000001"]


async def test_a_wrong_password_deletes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)

    response = await delete_me(client, token, "not the password")

    assert response.status_code == 400
    assert response.json() == WRONG_CURRENT
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await me(client, token) == 200


async def test_deleting_needs_a_valid_token_and_a_password(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)

    without_token = await delete_me(client, "not-a-token", PASSWORD)
    without_body = await client.delete(ME_URL, headers={"Authorization": f"Bearer {token}"})

    assert without_token.status_code == 401
    assert without_body.status_code == 422
    assert await db.fetchval("SELECT count(*) FROM users") == 1


def redis_of(queue: Queue) -> Redis:
    assert isinstance(queue, RedisQueue)
    return queue.redis


async def dead_letter(queue: Queue, user_id: object) -> str:
    """A dead letter of ``user_id``'s, in the notifier's layout (``herald_shared.ledger``)."""
    message_id = str(uuid.uuid4())
    payload = {"message_id": message_id, "user_id": str(user_id), "email": EMAIL}
    letter = json.dumps({"task": SEND_PASSWORD_CHANGED_EMAIL.name, "payload": payload})
    redis = redis_of(queue)
    await redis.hset(dead_letters_key(queue.name), message_id, letter)  # type: ignore[misc]
    await redis.zadd(dead_letters_index_key(queue.name), {message_id: 1.0})
    return message_id


async def keys_holding(queue: Queue, *texts: str) -> list[str]:
    """The keys of ``queue``'s namespace whose value holds any of ``texts``."""
    redis, found = redis_of(queue), []
    async for key in redis.scan_iter(match=f"*{queue.name}*", count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            value = await redis.get(key) or b""
        elif kind == "hash":
            value = b" ".join(await redis.hvals(key))  # type: ignore[misc]
        else:
            continue
        if any(text.encode() in value for text in texts):
            found.append(key.decode())
    return found


async def test_deleting_forgets_the_account_in_redis(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)  # its welcome email's job waits in the queue
    user_id = await db.fetchval("SELECT id FROM users")
    [welcome] = await db.fetchval("SELECT array_agg(message_id) FROM outbox")
    theirs, someone_elses = (
        await dead_letter(notifier_queue, user_id),
        await dead_letter(notifier_queue, uuid.uuid4()),
    )
    assert await keys_holding(notifier_queue, EMAIL)

    assert (await delete_me(client, token, PASSWORD)).status_code == 204

    redis = redis_of(notifier_queue)
    assert await notifier_queue.count("incomplete") == 0
    assert await redis.get(job_key(notifier_queue.name, welcome)) is None
    # Should its job come back (a push racing the deletion), its record stops it.
    assert await redis.get(delivery_record_key(notifier_queue.name, welcome)) == b"skipped:"
    letters = await redis.hkeys(dead_letters_key(notifier_queue.name))  # type: ignore[misc]
    assert letters == [someone_elses.encode()]
    assert theirs.encode() not in await redis.zrange(
        dead_letters_index_key(notifier_queue.name), 0, -1
    )
    # Only the other account's letter still holds the address (the test gave it the same).
    assert await keys_holding(notifier_queue, EMAIL, "Ada") == [
        dead_letters_key(notifier_queue.name)
    ]


async def test_a_job_running_as_its_account_is_deleted_is_left_to_its_worker_unsent(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    """The worker's next step meets the ``skipped`` record: it sends nothing and retries
    nothing (the notifier's tests show how an attempt takes it)."""
    token = await logged_in(client, db)
    running = await notifier_queue.dequeue()
    assert running is not None
    await running.update(status=Status.ACTIVE)
    record = delivery_record_key(notifier_queue.name, running.key)
    await redis_of(notifier_queue).set(record, "claimed:worker/job/1:99999999999999")

    assert (await delete_me(client, token, PASSWORD)).status_code == 204

    still = await notifier_queue.job(running.key)
    assert still is not None
    assert still.status == Status.ACTIVE
    assert await redis_of(notifier_queue).get(record) == b"skipped:"


async def test_a_sent_message_stays_recorded_sent(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)
    done = await notifier_queue.dequeue()
    assert done is not None
    record = delivery_record_key(notifier_queue.name, done.key)
    await redis_of(notifier_queue).set(record, "sent:")
    await redis_of(notifier_queue).delete(done.id)  # the notifier deletes a finished job

    assert (await delete_me(client, token, PASSWORD)).status_code == 204

    assert await redis_of(notifier_queue).get(record) == b"sent:"


async def test_deleting_with_redis_down_still_deletes_and_says_what_was_not_forgotten(
    settings: Settings, open_client: OpenClient, db: asyncpg.Connection
) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with open_client(down) as http:
        token = await logged_in(http, db)
        with capture_logs() as logs:
            response = await delete_me(http, token, PASSWORD)

    assert response.status_code == 204
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    [failed] = [entry for entry in logs if entry["event"] == "user.redis_forget_failed"]
    assert failed["messages"] == 1


# --- moving one's account to another address -----------------------------------------------

NEW_EMAIL = "ada.lovelace@example.org"
CHANGE_REQUESTED = {
    "email": NEW_EMAIL,
    "detail": "If no account has this address yet, a link to confirm it is on its way. Your "
    "account keeps its current address until the link is opened.",
}


async def ask_to_move(
    client: httpx.AsyncClient, token: str, password: str = PASSWORD, new_email: str = NEW_EMAIL
) -> httpx.Response:
    return await client.post(
        "/api/v1/users/me/email",
        json={"password": password, "new_email": new_email},
        headers={"Authorization": f"Bearer {token}"},
    )


async def change_links(queue: Queue, settings: Settings) -> list[tuple[str, str]]:
    """(recipient, token) of each queued email change confirmation, oldest first."""
    info = await queue.info(jobs=True)
    jobs = sorted(info["jobs"], key=lambda job: job["queued"])
    messages = [
        EmailChangeEmail.decode(job["kwargs"]["payload"])
        for job in jobs
        if job["function"] == SEND_EMAIL_CHANGE_EMAIL.name
    ]
    return [
        (
            message.email,
            derive(
                settings.link_secret,
                token_id=message.confirmation.token_id,
                purpose="change_email",
            ),
        )
        for message in messages
    ]


async def verify(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/verify", json={"token": token})


async def test_the_link_sent_to_the_new_address_moves_the_account(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    token = await logged_in(client, db)

    asked = await ask_to_move(client, token, new_email="  Ada.Lovelace@EXAMPLE.org")
    [(recipient, link)] = await change_links(notifier_queue, settings)
    unchanged = await db.fetchval("SELECT email FROM users")
    moved = await verify(client, link)

    assert asked.status_code == 202
    assert asked.json() == CHANGE_REQUESTED
    assert recipient == NEW_EMAIL
    assert unchanged == EMAIL
    assert moved.status_code == 200
    assert (moved.json()["email"], moved.json()["email_verified"]) == (NEW_EMAIL, True)
    login = await client.post(
        "/api/v1/auth/token", data={"username": NEW_EMAIL, "password": PASSWORD}
    )
    assert login.status_code == 200
    assert (await log_in(client, PASSWORD)).status_code == 401  # the old address
    info = await notifier_queue.info(jobs=True)
    [notice] = [
        EmailChangedEmail.decode(job["kwargs"]["payload"])
        for job in info["jobs"]
        if job["function"] == SEND_EMAIL_CHANGED_EMAIL.name
    ]
    assert notice.email == EMAIL
    assert moved.json()["status"] == "email_changed"
    again = await verify(client, link)  # once only; again: done already, nothing personal
    assert again.status_code == 200
    assert again.json() == {
        "status": "already_verified",
        "detail": "This address change is already confirmed. You can log in with the new "
        "address now.",
    }


async def test_a_spent_change_link_of_an_account_moved_on_is_invalid(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    """ "Already confirmed" only while the account has the address the link confirmed."""
    token = await logged_in(client, db)
    await ask_to_move(client, token)
    [(_, link)] = await change_links(notifier_queue, settings)
    assert (await verify(client, link)).status_code == 200
    await db.execute("UPDATE users SET email = 'elsewhere@example.org'")

    again = await verify(client, link)

    assert again.status_code == 400


async def test_a_wrong_password_moves_nothing_and_sends_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    token = await logged_in(client, db)

    response = await ask_to_move(client, token, password="not the password")

    assert response.status_code == 400
    assert response.json() == WRONG_CURRENT
    assert await change_links(notifier_queue, settings) == []


async def test_an_address_with_an_account_gets_the_same_answer_and_no_email(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    token = await logged_in(client, db)
    other = {"email": NEW_EMAIL, "password": NEW_PASSWORD, "display_name": "Other"}
    assert (await client.post("/api/v1/users", json=other)).status_code == 202

    taken = await ask_to_move(client, token)
    own = await ask_to_move(client, token, new_email=EMAIL)

    assert (taken.status_code, own.status_code) == (202, 202)
    assert taken.json() == CHANGE_REQUESTED
    assert await change_links(notifier_queue, settings) == []


async def test_an_address_taken_before_the_link_is_opened_is_a_conflict(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    token = await logged_in(client, db)
    await ask_to_move(client, token)
    [(_, link)] = await change_links(notifier_queue, settings)
    other = {"email": NEW_EMAIL, "password": NEW_PASSWORD, "display_name": "Other"}
    assert (await client.post("/api/v1/users", json=other)).status_code == 202

    response = await verify(client, link)

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Another account has this address now; ask to change to another one."
    }
    assert await db.fetchval("SELECT email FROM users WHERE display_name = 'Ada'") == EMAIL


async def test_only_the_newest_change_link_works_and_only_for_a_change(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    token = await logged_in(client, db)
    await ask_to_move(client, token, new_email="first@example.org")
    await ask_to_move(client, token, new_email="second@example.org")
    (_, old), (_, new) = await change_links(notifier_queue, settings)

    reset = await client.post(
        "/api/v1/auth/password/reset", json={"token": new, "password": NEW_PASSWORD}
    )

    assert reset.status_code == 400
    assert (await verify(client, old)).status_code == 400
    assert (await verify(client, new)).json()["email"] == "second@example.org"


async def test_a_password_change_voids_a_pending_move(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    """Whoever asked for the move knew the old password; the new one ends it."""
    token = await logged_in(client, db)
    await ask_to_move(client, token)
    [(_, link)] = await change_links(notifier_queue, settings)

    assert (await change(client, token, PASSWORD)).status_code == 200

    assert (await verify(client, link)).status_code == 400
    assert await db.fetchval("SELECT email FROM users") == EMAIL


# --- the profile: display name and language ------------------------------------------------


async def update_me(client: httpx.AsyncClient, token: str, body: object) -> httpx.Response:
    return await client.patch(ME_URL, json=body, headers={"Authorization": f"Bearer {token}"})


async def test_patch_me_changes_the_name_and_the_language(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    token = await logged_in(client, db)

    renamed = await update_me(client, token, {"display_name": "  Ada King "})
    relocated = await update_me(client, token, {"locale": "pt_br"})
    profile = await client.get(ME_URL, headers={"Authorization": f"Bearer {token}"})

    assert renamed.status_code == relocated.status_code == 200
    assert (renamed.json()["display_name"], renamed.json()["locale"]) == ("Ada King", "en")
    assert (relocated.json()["display_name"], relocated.json()["locale"]) == ("Ada King", "pt-BR")
    assert profile.json() == relocated.json()
    assert await db.fetchrow("SELECT display_name, locale FROM users") == ("Ada King", "pt-BR")


async def test_emails_staged_after_a_language_change_carry_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    token = await logged_in(client, db)
    assert (await update_me(client, token, {"locale": "de"})).status_code == 200

    assert (await change(client, token, PASSWORD)).status_code == 200

    [notice] = await notices(notifier_queue)
    assert notice.locale == "de"


@pytest.mark.parametrize(
    "body",
    [{}, {"display_name": None, "locale": None}, {"locale": "no-such-tag"}, {"display_name": ""}],
)
async def test_patch_me_refuses_nothing_to_change_and_unknown_tags(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: object
) -> None:
    token = await logged_in(client, db)

    response = await update_me(client, token, body)

    assert response.status_code == 422
    assert await db.fetchrow("SELECT display_name, locale FROM users") == ("Ada", "en")


async def test_patch_me_needs_a_valid_token(client: httpx.AsyncClient) -> None:
    response = await client.patch(ME_URL, json={"display_name": "Mallory"})

    assert response.status_code == 401

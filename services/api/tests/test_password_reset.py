"""Forgotten passwords: a reset link by email, spent on a new password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from saq import Queue
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_shared.messages import PasswordChangedEmail, PasswordResetEmail, WelcomeEmail
from herald_shared.tasks import (
    SEND_PASSWORD_CHANGED_EMAIL,
    SEND_PASSWORD_RESET_EMAIL,
    SEND_WELCOME_EMAIL,
)
from herald_shared.tokens import derive
from herald_testing.clients import OpenClient
from herald_testing.jobs import queued
from herald_testing.ports import free_port

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new passphrase"
FORGOT_URL = "/api/v1/auth/password/forgot"
RESET_URL = "/api/v1/auth/password/reset"
RESET_REQUESTED = {
    "email": EMAIL,
    "detail": "If this address has an account, a link to choose a new password is on its "
    "way. Earlier reset links no longer work.",
}
LINK_INVALID = {
    "detail": "This password reset link is invalid, expired or already used. Ask for a new one."
}


async def sign_up(client: httpx.AsyncClient, db: asyncpg.Connection, *, verified: bool) -> None:
    body = {"email": EMAIL, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/api/v1/users", json=body)).status_code == 202
    if verified:
        await db.execute("UPDATE users SET email_verified_at = now()")


async def forgot(client: httpx.AsyncClient, email: str = EMAIL) -> httpx.Response:
    return await client.post(FORGOT_URL, json={"email": email})


async def reset(client: httpx.AsyncClient, token: str, password: str) -> httpx.Response:
    return await client.post(RESET_URL, json={"token": token, "password": password})


async def log_in(client: httpx.AsyncClient, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/token", data={"username": EMAIL, "password": password})


async def reset_tokens(queue: Queue, settings: Settings) -> list[str]:
    """The tokens of the queued reset emails' links, oldest first, as the notifier derives them."""
    return [
        derive(
            settings.link_secret,
            token_id=PasswordResetEmail.decode(payload).reset.token_id,
            purpose="reset_password",
        )
        for payload in await queued(queue, SEND_PASSWORD_RESET_EMAIL.name)
    ]


async def test_a_reset_link_sets_a_new_password(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)

    asked = await forgot(client, "  Ada@EXAMPLE.com")
    [token] = await reset_tokens(notifier_queue, settings)
    response = await reset(client, token, NEW_PASSWORD)

    assert asked.status_code == 202
    assert asked.json() == RESET_REQUESTED
    assert response.status_code == 200
    assert response.json()["email"] == EMAIL
    assert (await log_in(client, PASSWORD)).status_code == 401
    assert (await log_in(client, NEW_PASSWORD)).status_code == 200


async def test_the_reset_email_goes_to_the_account_and_expires_within_the_hour(
    client: httpx.AsyncClient, notifier_queue: Queue, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)

    await forgot(client)

    [payload] = await queued(notifier_queue, SEND_PASSWORD_RESET_EMAIL.name)
    message = PasswordResetEmail.decode(payload)
    assert (message.email, message.display_name) == (EMAIL, "Ada")
    user_id, lifetime = await db.fetchrow(
        "SELECT user_id, expires_at - created_at FROM email_tokens WHERE purpose = $1",
        "reset_password",
    )
    assert message.user_id == user_id
    assert abs(lifetime.total_seconds() - 60 * 60) < 5


@pytest.mark.parametrize("case", ["no account", "unverified", "verified"])
async def test_forgot_answers_the_same_whoever_asks(
    client: httpx.AsyncClient, notifier_queue: Queue, db: asyncpg.Connection, case: str
) -> None:
    if case != "no account":
        await sign_up(client, db, verified=case == "verified")

    response = await forgot(client)

    assert response.status_code == 202
    assert response.json() == RESET_REQUESTED
    sent = await queued(notifier_queue, SEND_PASSWORD_RESET_EMAIL.name)
    assert len(sent) == (0 if case == "no account" else 1)


async def test_a_reset_link_works_once(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)
    await forgot(client)
    [token] = await reset_tokens(notifier_queue, settings)

    answers = await asyncio.gather(
        reset(client, token, NEW_PASSWORD), reset(client, token, "yet another passphrase")
    )

    assert sorted(answer.status_code for answer in answers) == [200, 400]
    [refused] = [answer for answer in answers if answer.status_code == 400]
    assert refused.json() == LINK_INVALID
    winner = NEW_PASSWORD if answers[0].status_code == 200 else "yet another passphrase"
    assert (await log_in(client, winner)).status_code == 200


async def test_an_expired_link_changes_nothing(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)
    await forgot(client)
    [token] = await reset_tokens(notifier_queue, settings)
    await db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")

    response = await reset(client, token, NEW_PASSWORD)

    assert response.status_code == 400
    assert response.json() == LINK_INVALID
    assert (await log_in(client, PASSWORD)).status_code == 200
    assert await queued(notifier_queue, SEND_PASSWORD_CHANGED_EMAIL.name) == []


async def test_a_new_request_voids_the_earlier_link(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)
    await forgot(client)
    await forgot(client)
    old, new = await reset_tokens(notifier_queue, settings)

    assert (await reset(client, old, NEW_PASSWORD)).json() == LINK_INVALID
    assert (await reset(client, new, NEW_PASSWORD)).status_code == 200


async def test_reset_and_verification_tokens_are_not_interchangeable(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=False)
    await forgot(client)
    [welcome] = await queued(notifier_queue, SEND_WELCOME_EMAIL.name)
    link = WelcomeEmail.decode(welcome).verification
    assert link is not None
    verify_token = derive(settings.link_secret, token_id=link.token_id, purpose="verify_email")
    [reset_token] = await reset_tokens(notifier_queue, settings)
    # The reset link's id, made into a verification token: the purpose is part of the MAC.
    [reset_payload] = await queued(notifier_queue, SEND_PASSWORD_RESET_EMAIL.name)
    reset_id = PasswordResetEmail.decode(reset_payload).reset.token_id
    crossed = derive(settings.link_secret, token_id=reset_id, purpose="verify_email")

    assert (await reset(client, verify_token, NEW_PASSWORD)).json() == LINK_INVALID
    verify = "/api/v1/auth/verify"
    assert (await client.post(verify, json={"token": reset_token})).status_code == 400
    assert (await client.post(verify, json={"token": crossed})).status_code == 400
    # Both still work for what they were made for.
    assert (await reset(client, reset_token, NEW_PASSWORD)).status_code == 200
    assert (await client.post(verify, json={"token": verify_token})).status_code == 200


@pytest.mark.parametrize(
    ("password", "problem"),
    [("Zq7!x", "too_short"), ("password1", "password_too_common"), ("x" * 129, "too_long")],
)
async def test_a_refused_password_leaves_the_link_usable(
    *,
    client: httpx.AsyncClient,
    notifier_queue: Queue,
    settings: Settings,
    db: asyncpg.Connection,
    password: str,
    problem: str,
) -> None:
    await sign_up(client, db, verified=True)
    await forgot(client)
    [token] = await reset_tokens(notifier_queue, settings)

    refused = await reset(client, token, password)

    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "password"], problem)
    assert password not in refused.text
    assert (await reset(client, token, NEW_PASSWORD)).status_code == 200


async def test_a_reset_signs_out_every_earlier_session(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)
    before = (await log_in(client, PASSWORD)).json()["access_token"]
    me = "/api/v1/users/me"
    assert (await client.get(me, headers={"Authorization": f"Bearer {before}"})).status_code == 200

    await forgot(client)
    [token] = await reset_tokens(notifier_queue, settings)
    assert (await reset(client, token, NEW_PASSWORD)).status_code == 200
    after = (await log_in(client, NEW_PASSWORD)).json()["access_token"]

    old_session = await client.get(me, headers={"Authorization": f"Bearer {before}"})
    assert old_session.status_code == 401
    assert old_session.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert (await client.get(me, headers={"Authorization": f"Bearer {after}"})).status_code == 200


async def test_a_reset_verifies_the_address_and_tells_its_owner(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=False)
    await forgot(client)
    [token] = await reset_tokens(notifier_queue, settings)

    response = await reset(client, token, NEW_PASSWORD)

    assert response.json()["email_verified"] is True
    assert (await log_in(client, NEW_PASSWORD)).status_code == 200
    [payload] = await queued(notifier_queue, SEND_PASSWORD_CHANGED_EMAIL.name)
    notice = PasswordChangedEmail.decode(payload)
    assert (notice.email, notice.user_id) == (EMAIL, await db.fetchval("SELECT id FROM users"))
    # The notice is in the outbox, committed with the new password.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM outbox WHERE task = $1", SEND_PASSWORD_CHANGED_EMAIL.name
        )
        == 1
    )


async def test_no_token_or_password_reaches_a_log_line(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, db, verified=True)
    with capture_logs() as logs:
        await forgot(client)
        [token] = await reset_tokens(notifier_queue, settings)
        await reset(client, token, "short")
        await reset(client, token, NEW_PASSWORD)
        await reset(client, token, NEW_PASSWORD)

    text = str(logs)
    for secret in (token, NEW_PASSWORD, "$argon2"):
        assert secret not in text
    events = [entry["event"] for entry in logs]
    assert "password_reset.requested" in events
    assert "password.reset" in events


@pytest.fixture
async def limited_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with the default password reset limits (3 emails an hour)."""
    async with open_client(settings.model_copy(update={"rate_limits_enabled": True})) as http:
        yield http


async def test_reset_emails_are_rate_limited_per_address(
    limited_client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    await sign_up(limited_client, db, verified=True)

    answers = [await forgot(limited_client, email) for email in [EMAIL, EMAIL, "ADA@example.com"]]
    refused = await forgot(limited_client)
    other = await forgot(limited_client, "grace@example.com")

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert other.status_code == 202
    assert len(await queued(notifier_queue, SEND_PASSWORD_RESET_EMAIL.name)) == 3


@pytest.mark.parametrize(
    ("path", "failed"),
    [
        ("/api/v1/auth/verify/resend", "verification.resend_failed"),
        (FORGOT_URL, "password_reset.request_failed"),
    ],
)
async def test_work_after_the_response_fails_into_the_log_only(
    settings: Settings, open_client: OpenClient, path: str, failed: str
) -> None:
    """The answer goes out before the account is looked up: a database that cannot
    be reached changes nothing in it, and the failure is logged."""
    unreachable = settings.model_copy(
        update={
            "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/herald",
            "database_connect_timeout_seconds": 0.5,
        }
    )
    async with open_client(unreachable) as http:
        with capture_logs() as logs:
            response = await http.post(path, json={"email": EMAIL})

    assert response.status_code == 202
    [entry] = [entry for entry in logs if entry["event"] == failed]
    assert entry["log_level"] == "error"
    assert "exc_info" in entry

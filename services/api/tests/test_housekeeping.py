"""The account jobs the scheduler triggers: reminders, and purges of unverified
accounts and spent tokens. Time is controlled by back-dating rows."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from saq import Queue

from herald_api.core.settings import Settings
from herald_shared.messages import VerificationEmail
from herald_shared.tasks import SEND_VERIFICATION_EMAIL
from herald_shared.tokens import derive

TOKEN = "internal-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAY = 24 * 3600


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


async def sign_up(client: httpx.AsyncClient, *emails: str) -> None:
    for email in emails:
        body = {"email": email, "password": "correct horse battery", "display_name": "A"}
        assert (await client.post("/api/v1/users", json=body)).status_code == 202


async def age(db: asyncpg.Connection, email: str, *, hours: float) -> None:
    """Make ``email``'s account ``hours`` old."""
    await db.execute(
        "UPDATE users SET created_at = now() - make_interval(secs => $2) WHERE email = $1",
        email,
        hours * 3600,
    )


async def reminders(queue: Queue) -> list[VerificationEmail]:
    info = await queue.info(jobs=True, limit=1000)
    return [
        VerificationEmail.decode(job["kwargs"]["payload"])
        for job in info["jobs"]
        if job["function"] == SEND_VERIFICATION_EMAIL.name
    ]


async def remind(client: httpx.AsyncClient, older_than: int = DAY) -> int:
    response = await client.post(
        "/internal/v1/users/remind-unverified",
        json={"older_than_seconds": older_than},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    reminded: int = response.json()["reminded"]
    return reminded


async def test_users_unverified_for_a_day_get_one_reminder_with_a_working_link(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue, settings: Settings
) -> None:
    await sign_up(client, "old@example.com", "new@example.com", "done@example.com")
    await age(db, "old@example.com", hours=25)
    await age(db, "done@example.com", hours=25)
    await db.execute("UPDATE users SET email_verified_at = now() WHERE email = 'done@example.com'")

    assert await remind(client) == 1
    assert await remind(client) == 0  # never two

    [reminder] = await reminders(notifier_queue)
    assert reminder.email == "old@example.com"
    assert reminder.reason == "reminder"
    token = derive(
        settings.link_secret, token_id=reminder.verification.token_id, purpose="verify_email"
    )
    verified = await client.post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200
    assert verified.json()["email"] == "old@example.com"


async def test_concurrent_reminder_runs_remind_each_user_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    emails = [f"user{i}@example.com" for i in range(20)]
    await sign_up(client, *emails)
    await db.execute("UPDATE users SET created_at = now() - interval '2 days'")

    counts = await asyncio.gather(*(remind(client) for _ in range(4)))

    assert sum(counts) == 20
    assert sorted(r.email for r in await reminders(notifier_queue)) == sorted(emails)


async def test_unverified_accounts_are_purged_after_the_given_age_with_their_tokens(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await sign_up(client, "stale@example.com", "fresh@example.com", "kept@example.com")
    await age(db, "stale@example.com", hours=7 * 24 + 1)
    await age(db, "kept@example.com", hours=30 * 24)
    await db.execute("UPDATE users SET email_verified_at = now() WHERE email = 'kept@example.com'")

    response = await client.post(
        "/internal/v1/users/purge-unverified", json={"older_than_seconds": 7 * DAY}, headers=AUTH
    )

    assert response.status_code == 200
    assert response.json() == {"deleted": 1}
    emails = {r["email"] for r in await db.fetch("SELECT email FROM users")}
    assert emails == {"fresh@example.com", "kept@example.com"}
    orphans = await db.fetchval(
        "SELECT count(*) FROM email_tokens t LEFT JOIN users u ON u.id = t.user_id "
        "WHERE u.id IS NULL"
    )
    assert orphans == 0
    assert await db.fetchval("SELECT count(*) FROM email_tokens") == 2


async def test_spent_and_expired_tokens_are_purged_after_their_retention(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await sign_up(client, "a@example.com", "b@example.com", "c@example.com")
    await db.execute(
        "UPDATE email_tokens SET used_at = now() - interval '2 days' WHERE user_id = "
        "(SELECT id FROM users WHERE email = 'a@example.com')"
    )
    await db.execute(
        "UPDATE email_tokens SET expires_at = now() - interval '2 days' WHERE user_id = "
        "(SELECT id FROM users WHERE email = 'b@example.com')"
    )

    response = await client.post(
        "/internal/v1/tokens/purge", json={"older_than_seconds": DAY}, headers=AUTH
    )

    assert response.json() == {"deleted": 2}
    assert await db.fetchval("SELECT count(*) FROM email_tokens") == 1


@pytest.mark.parametrize(
    "path",
    [
        "/internal/v1/users/remind-unverified",
        "/internal/v1/users/purge-unverified",
        "/internal/v1/tokens/purge",
    ],
)
async def test_account_jobs_need_the_token(
    client: httpx.AsyncClient, db: asyncpg.Connection, path: str
) -> None:
    await sign_up(client, "a@example.com")
    await db.execute("UPDATE users SET created_at = now() - interval '30 days'")

    response = await client.post(path, json={"older_than_seconds": 60})

    assert response.status_code == 401
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT verification_reminded_at FROM users") is None

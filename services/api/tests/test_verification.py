"""Email verification: spending a link's token, and asking for a fresh link."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from saq import Queue
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_shared.messages import VerificationEmail, WelcomeEmail
from herald_shared.tasks import SEND_VERIFICATION_EMAIL, SEND_WELCOME_EMAIL
from herald_shared.tokens import derive

PASSWORD = "correct horse battery staple"
LINK_INVALID = "This verification link is invalid, expired or already used. Ask for a new one."
ALREADY_VERIFIED = {
    "status": "already_verified",
    "detail": "This address is already verified. You can log in now.",
}


async def sign_up(client: httpx.AsyncClient, email: str = "ada@example.com") -> None:
    body = {"email": email, "password": PASSWORD, "display_name": "Ada"}
    assert (await client.post("/api/v1/users", json=body)).status_code == 202


async def tokens_queued(queue: Queue, settings: Settings, function: str) -> list[str]:
    """The link tokens of the queued jobs of ``function``, oldest first, as the notifier
    derives them."""
    info = await queue.info(jobs=True)
    message_type = WelcomeEmail if function == SEND_WELCOME_EMAIL.name else VerificationEmail
    tokens = []
    for job in sorted(info["jobs"], key=lambda job: job["queued"]):
        if job["function"] == function:
            message = message_type.decode(job["kwargs"]["payload"])
            assert message.verification is not None
            tokens.append(
                derive(
                    settings.link_secret,
                    token_id=message.verification.token_id,
                    purpose="verify_email",
                )
            )
    return tokens


async def verify(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/verify", json={"token": token})


async def test_the_welcome_link_verifies_the_account(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client)
    [token] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)

    response = await verify(client, token)

    assert response.status_code == 200
    assert response.json()["status"] == "verified"
    assert response.json()["email"] == "ada@example.com"
    assert response.json()["email_verified"] is True
    assert response.json()["locale"] == "en"
    assert await db.fetchval("SELECT email_verified_at IS NOT NULL FROM users")


async def test_a_second_click_says_already_verified_and_nothing_personal(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    """A mail scanner opening the link first must not leave the person an "invalid"
    answer; an old link must not tell who it belonged to either."""
    await sign_up(client)
    [token] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)

    assert (await verify(client, token)).json()["status"] == "verified"
    verified_at = await db.fetchval("SELECT email_verified_at FROM users")
    again = await verify(client, token)

    assert again.status_code == 200
    assert again.json() == ALREADY_VERIFIED
    assert "ada" not in again.text.lower()
    assert await db.fetchval("SELECT email_verified_at FROM users") == verified_at


async def test_an_expired_link_of_a_verified_account_says_already_verified(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    """Verified another way (a password reset proves the address too), then the old link."""
    await sign_up(client)
    [token] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)
    await db.execute("UPDATE users SET email_verified_at = now()")
    await db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")

    response = await verify(client, token)

    assert response.status_code == 200
    assert response.json() == ALREADY_VERIFIED


async def test_another_accounts_verified_state_never_changes_the_answer(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client, "ada@example.com")
    await sign_up(client, "grace@example.com")
    ada_token, grace_token = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)
    assert (await verify(client, grace_token)).json()["status"] == "verified"
    await db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")

    response = await verify(client, ada_token)

    assert response.status_code == 400
    assert response.json() == {"detail": LINK_INVALID}
    assert (
        await db.fetchval("SELECT email_verified_at FROM users WHERE email = 'ada@example.com'")
        is None
    )


async def test_two_clicks_at_once_verify_once(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings
) -> None:
    await sign_up(client)
    [token] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)

    answers = await asyncio.gather(*(verify(client, token) for _ in range(5)))

    assert [answer.status_code for answer in answers] == [200] * 5
    assert sorted(answer.json()["status"] for answer in answers) == [
        "already_verified",
        "already_verified",
        "already_verified",
        "already_verified",
        "verified",
    ]


async def test_an_expired_token_gets_the_same_error(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings, db: asyncpg.Connection
) -> None:
    await sign_up(client)
    [token] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)
    await db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")

    response = await verify(client, token)

    assert response.status_code == 400
    assert response.json() == {"detail": LINK_INVALID}
    assert await db.fetchval("SELECT email_verified_at FROM users") is None


@pytest.mark.parametrize(
    "token",
    [
        "A" * 43,  # well-formed, unknown
        "not a token",
        "x",
        "' OR 1=1 --",
    ],
)
async def test_unknown_or_malformed_tokens_get_the_same_error(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await verify(client, token)

    assert response.status_code == 400
    assert response.json() == {"detail": LINK_INVALID}


async def test_a_token_is_bound_to_its_purpose_and_secret(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings
) -> None:
    await sign_up(client)
    info = await notifier_queue.info(jobs=True)
    message = WelcomeEmail.decode(info["jobs"][0]["kwargs"]["payload"])
    assert message.verification is not None
    token_id = message.verification.token_id

    # The token id alone (what travels through Redis) is not the token.
    assert (await verify(client, token_id)).status_code == 400
    wrong_secret = derive(SecretStr("x" * 40), token_id=token_id, purpose="verify_email")
    assert (await verify(client, wrong_secret)).status_code == 400


async def test_resend_sends_a_fresh_link_and_voids_the_old_one(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings
) -> None:
    await sign_up(client)
    [old] = await tokens_queued(notifier_queue, settings, SEND_WELCOME_EMAIL.name)

    response = await client.post("/api/v1/auth/verify/resend", json={"email": "Ada@Example.com"})

    assert response.status_code == 202
    [new] = await tokens_queued(notifier_queue, settings, SEND_VERIFICATION_EMAIL.name)
    assert (await verify(client, old)).status_code == 400
    assert (await verify(client, new)).status_code == 200
    info = await notifier_queue.info(jobs=True)
    reasons = [
        VerificationEmail.decode(job["kwargs"]["payload"]).reason
        for job in info["jobs"]
        if job["function"] == SEND_VERIFICATION_EMAIL.name
    ]
    assert reasons == ["requested"]


@pytest.mark.parametrize("case", ["unknown", "verified", "unverified"])
async def test_resend_answers_the_same_whoever_asks(
    client: httpx.AsyncClient,
    notifier_queue: Queue,
    settings: Settings,
    db: asyncpg.Connection,
    case: str,
) -> None:
    await sign_up(client, "known@example.com")
    if case == "verified":
        await db.execute("UPDATE users SET email_verified_at = now()")
    email = "nobody@example.com" if case == "unknown" else "known@example.com"

    response = await client.post("/api/v1/auth/verify/resend", json={"email": email})

    assert response.status_code == 202
    assert response.json() == {
        "email": email,
        "detail": "If this address has an account that is not verified yet, a new "
        "verification link is on its way. Earlier links no longer work.",
    }
    sent = await tokens_queued(notifier_queue, settings, SEND_VERIFICATION_EMAIL.name)
    assert len(sent) == (1 if case == "unverified" else 0)


async def test_resend_validates_the_address(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/verify/resend", json={"email": "nope"})

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "email"]]


async def test_no_token_reaches_a_log_line(
    client: httpx.AsyncClient, notifier_queue: Queue, settings: Settings
) -> None:
    with capture_logs() as logs:
        await sign_up(client)
        await client.post("/api/v1/auth/verify/resend", json={"email": "ada@example.com"})
        tokens = await tokens_queued(notifier_queue, settings, SEND_VERIFICATION_EMAIL.name)
        await verify(client, tokens[0])

    text = str(logs)
    assert tokens[0] not in text
    assert PASSWORD not in text
    assert "user.verified" in [entry["event"] for entry in logs]

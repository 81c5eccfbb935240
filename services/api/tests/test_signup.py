"""Signing up over HTTP: what the caller sees, what is stored, what is queued."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher
from saq import Queue

from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import SEND_WELCOME_EMAIL

PASSWORD = "correct horse battery staple"


def signup_body(**overrides: Any) -> dict[str, Any]:
    body = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada Lovelace"}
    body.update(overrides)
    return body


async def test_signup_returns_the_public_user_and_its_location(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/users", json=signup_body())

    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "email", "display_name", "created_at", "email_verified"}
    assert user["email"] == "ada@example.com"
    assert user["display_name"] == "Ada Lovelace"
    assert user["email_verified"] is False
    assert PASSWORD not in response.text
    assert response.headers["Location"] == f"/api/v1/users/{user['id']}"

    fetched = await client.get(response.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.json() == user


async def test_password_is_stored_only_as_an_owasp_grade_argon2id_hash(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    response = await client.post("/api/v1/users", json=signup_body())
    stored = await db.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", uuid.UUID(response.json()["id"])
    )

    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)


async def test_email_is_trimmed_and_lower_cased(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/users", json=signup_body(email="  Ada@Example.COM "))

    assert response.status_code == 201
    assert response.json()["email"] == "ada@example.com"


async def test_a_taken_email_gets_409_and_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    first = await client.post("/api/v1/users", json=signup_body())
    again = await client.post(
        "/api/v1/users", json=signup_body(email="ADA@example.com", display_name="Impostor")
    )

    assert again.status_code == 409
    assert again.json() == {"detail": "An account with this email address already exists."}
    rows = await db.fetch("SELECT id, display_name FROM users")
    assert [(str(r["id"]), r["display_name"]) for r in rows] == [
        (first.json()["id"], "Ada Lovelace")
    ]
    assert await notifier_queue.count("queued") == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": None}, "email"),
        ({"password": "seven77"}, "password"),
        ({"password": "x" * 129}, "password"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "Ada\r\nBcc: victim@example.com"}, "display_name"),
        ({"display_name": "x" * 101}, "display_name"),
    ],
)
async def test_invalid_bodies_get_422_naming_the_field_and_store_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = await client.post("/api/v1/users", json=signup_body(**overrides))

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_rejected_password_is_never_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/users", json=signup_body(password="hunter2"))

    assert response.status_code == 422
    assert "hunter2" not in response.text


async def test_unicode_passwords_of_eight_characters_are_accepted(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/users", json=signup_body(password="pässwörð"))

    assert response.status_code == 201


async def test_signup_queues_one_welcome_email_for_the_notifier(
    client: httpx.AsyncClient, notifier_queue: Queue
) -> None:
    response = await client.post(
        "/api/v1/users",
        json=signup_body(),
        headers={"X-Request-ID": "0f8fad5b-d9cb-469f-a165-70867728950e"},
    )
    user = response.json()

    assert await notifier_queue.count("queued") == 1
    info = await notifier_queue.info(jobs=True)
    [job] = info["jobs"]
    assert job["function"] == SEND_WELCOME_EMAIL.name
    assert job["retries"] == SEND_WELCOME_EMAIL.retries
    message = WelcomeEmail.decode(job["kwargs"]["payload"])
    assert job["key"] == str(message.message_id)
    assert str(message.user_id) == user["id"]
    assert message.email == "ada@example.com"
    assert message.display_name == "Ada Lovelace"
    assert message.request_id == response.headers["X-Request-ID"]
    assert message.request_id == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert PASSWORD not in str(job)
    assert "argon2" not in str(job)


async def test_unknown_user_is_404_and_a_malformed_id_is_422(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/api/v1/users/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/api/v1/users/not-a-uuid")).status_code == 422

"""Bodies the API cannot read get a 4xx that says why, never a 500.

Found by ``make fuzz`` (schemathesis) and by hand: FastAPI answered an
undecodable body with an undocumented, unexplained 400, read bodies of any
size, and a lone surrogate in a password reached argon2 and became a 500.
"""

from __future__ import annotations

import json

import asyncpg
import httpx
import pytest

from herald_api.core import errors

USERS = "/api/v1/users"
JSON = {"content-type": "application/json"}


def signup_json(**overrides: str) -> str:
    body = {"email": "ada@example.com", "password": "correct horse", "display_name": "Ada"}
    return json.dumps(body | overrides)


async def test_a_body_over_the_limit_is_413_and_stores_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = signup_json(display_name="x" * errors.MAX_BODY_BYTES)

    response = await client.post(USERS, content=body, headers=JSON)

    assert response.status_code == 413
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_body_over_the_limit_without_content_length_is_413(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> object:
        for _ in range(3):
            yield b" " * errors.MAX_BODY_BYTES

    response = await client.post(USERS, content=chunks(), headers=JSON)  # type: ignore[arg-type]

    assert response.status_code == 413
    assert response.json() == {"detail": errors.BODY_TOO_LARGE}


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml", "image/png"],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, db: asyncpg.Connection, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = await client.post(USERS, content=signup_json().encode(), headers=headers)

    assert response.status_code == 415
    assert response.json() == {"detail": errors.NOT_JSON}
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_json_suffix_content_type_is_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        USERS, content=signup_json(), headers={"content-type": "application/merge-patch+json"}
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, errors.BODY_TOO_DEEP),
        (b"[" * 20000 + b"]" * 20000, errors.BODY_TOO_DEEP),
        (b'{"email": "\xff\xfe@example.com"}', errors.BODY_NOT_UTF8),
        (b'{"display_name": ' + b"1" * 5000 + b"}", errors.BODY_UNREADABLE),
    ],
    ids=["nested-objects", "nested-arrays", "invalid-utf8", "number-too-long"],
)
async def test_undecodable_json_is_400_saying_why(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: bytes, detail: str
) -> None:
    response = await client.post(USERS, content=body, headers=JSON)

    assert response.status_code == 400
    assert response.json() == {"detail": detail}
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_syntactically_broken_json_is_still_422(client: httpx.AsyncClient) -> None:
    response = await client.post(USERS, content=b'{"email": ', headers=JSON)

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("field", ["password", "display_name"])
async def test_a_lone_surrogate_is_422_naming_the_field(
    client: httpx.AsyncClient, db: asyncpg.Connection, field: str
) -> None:
    # json.dumps writes a lone surrogate as the escape \ud800, which JSON allows.
    body = signup_json(**{field: "abcdefgh\ud800"})

    response = await client.post(USERS, content=body, headers=JSON)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_the_body_errors_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert {"400", "413", "415"} <= set(paths[USERS]["post"]["responses"])

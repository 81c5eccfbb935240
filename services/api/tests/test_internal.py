"""``POST /internal/v1/outbox/purge``: the scheduler's way to trim the outbox."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from herald_api.core.settings import Settings
from herald_api.outbox import table as outbox

TOKEN = "internal-token-for-tests-only"
PURGE = "/internal/v1/outbox/purge"
HOUR = {"older_than_seconds": 3600}

InsertPending = Callable[..., Awaitable[list[uuid.UUID]]]


def settled(ago: str, *, as_: str = "delivered") -> dict[str, str]:
    """Columns of a row relayed and then settled ``ago`` (an SQL interval)."""
    return {
        "relayed_at": f"now() - interval '{ago}' - interval '5 minutes'",
        "checked_at": f"now() - interval '{ago}'",
        "settled_at": f"now() - interval '{ago}'",
        "settled_as": f"'{as_}'",
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("internal-token-for-tests-onlY"),
        bearer(TOKEN[:-1]),
        bearer(""),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
    ids=["missing", "wrong", "prefix", "empty", "basic-scheme", "no-scheme"],
)
async def test_purge_without_the_right_token_is_401_and_deletes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    insert_pending: InsertPending,
    headers: dict[str, str],
) -> None:
    await insert_pending(2, **settled("2 days"))

    response = await client.post(PURGE, json=HOUR, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in response.text
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_auth_is_checked_before_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(PURGE, json={"older_than_seconds": 1})

    assert response.status_code == 401


async def test_without_a_configured_token_the_internal_routes_do_not_exist(
    no_token_client: httpx.AsyncClient,
) -> None:
    for headers in ({}, bearer(TOKEN), bearer("")):
        response = await no_token_client.post(PURGE, json=HOUR, headers=headers)
        assert response.status_code == 404
        assert "WWW-Authenticate" not in response.headers
    schema = (await no_token_client.get("/openapi.json")).json()
    assert PURGE not in schema["paths"]


async def test_purge_deletes_only_rows_settled_before_the_threshold(
    client: httpx.AsyncClient, db: asyncpg.Connection, insert_pending: InsertPending
) -> None:
    old = await insert_pending(1, **settled("2 hours"))
    old += await insert_pending(1, **settled("2 hours", as_="dead"))
    old += await insert_pending(1, **settled("2 hours", as_="skipped"))
    recent = await insert_pending(2, **settled("10 minutes"))
    # Relayed long ago but never confirmed delivered: its message may need a push yet.
    unsettled = await insert_pending(
        2, relayed_at="now() - interval '3 days'", checked_at="now() - interval '3 days'"
    )
    # Created long ago but never relayed: a purge must never lose a message.
    stuck = await insert_pending(
        2, created_at="now() - interval '3 days'", available_at="'infinity'"
    )
    due = await insert_pending(1, created_at="now() - interval '3 days'")

    response = await client.post(PURGE, json=HOUR, headers=bearer(TOKEN))

    assert response.status_code == 200
    assert response.json() == {"deleted": 3}
    left = {r["message_id"] for r in await db.fetch("SELECT message_id FROM outbox")}
    assert left == set(recent + unsettled + stuck + due)
    assert not left & set(old)

    again = await client.post(PURGE, json=HOUR, headers=bearer(TOKEN))
    assert again.json() == {"deleted": 0}


async def test_a_long_backlog_is_purged_in_several_transactions(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    insert_pending: InsertPending,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "PURGE_BATCH_SIZE", 3)
    await insert_pending(7, **settled("2 hours"))

    response = await client.post(PURGE, json=HOUR, headers=bearer(TOKEN))

    assert response.json() == {"deleted": 7}
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"older_than_seconds": 59}, {"older_than_seconds": -1}, {"older_than_seconds": "x"}],
)
async def test_a_threshold_under_a_minute_or_missing_is_422(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post(PURGE, json=body, headers=bearer(TOKEN))

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "older_than_seconds"]]


async def test_the_purge_is_documented_with_its_bearer_scheme(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    operation = schema["paths"][PURGE]["post"]
    assert operation["tags"] == ["internal"]
    assert {"401", "404", "422"} <= set(operation["responses"])
    assert operation["security"] == [{"InternalToken": []}]
    assert schema["components"]["securitySchemes"]["InternalToken"]["scheme"] == "bearer"


async def test_an_absurd_retention_is_422_not_a_database_error(client: httpx.AsyncClient) -> None:
    # Found by `make fuzz`: now() - 350,000 years is no timestamp PostgreSQL has.
    response = await client.post(
        PURGE, json={"older_than_seconds": 11_027_020_048_931}, headers=bearer(TOKEN)
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "older_than_seconds"]


async def test_a_purge_body_that_is_not_json_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        PURGE,
        content=json.dumps(HOUR),
        headers=bearer(TOKEN) | {"content-type": "text/plain"},
    )

    assert response.status_code == 415


async def test_without_the_token_the_content_type_is_not_checked(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        PURGE, content=json.dumps(HOUR), headers={"content-type": "text/plain"}
    )

    assert response.status_code == 401

"""PostgreSQL unreachable: 503 with Retry-After, nothing half-written, recovery by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from herald_api.core.errors import DATABASE_UNAVAILABLE
from herald_api.core.settings import Settings
from herald_testing.clients import OpenClient
from herald_testing.ports import free_port

BODY = {"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}


@pytest.fixture
async def dead_db_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its database URL on a port where nothing listens."""
    dead = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/herald"
    async with open_client(settings.model_copy(update={"database_url": dead})) as http:
        yield http


VERIFY = "/api/v1/auth/verify"
UNKNOWN_TOKEN = {"token": "A" * 43}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.json() == {"detail": DATABASE_UNAVAILABLE}
    assert response.headers["Retry-After"] == "1"


async def test_signup_and_verify_answer_503_when_postgres_is_unreachable(
    dead_db_client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    assert_unavailable(await dead_db_client.post("/api/v1/users", json=BODY))
    assert_unavailable(await dead_db_client.post(VERIFY, json=UNKNOWN_TOKEN))

    ready = await dead_db_client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgres"].startswith("error")
    # Validation still answers without the database.
    assert (await dead_db_client.post("/api/v1/users", json={})).status_code == 422
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_connection_lost_mid_signup_is_503_and_writes_neither_row(
    client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
) -> None:
    # Hold the signup between its two inserts: SHARE mode blocks INSERT into outbox
    # (and nothing the relay's claims need), so the signup waits there, user written.
    locker = await asyncpg.connect(database_url)
    signup: asyncio.Task[httpx.Response] | None = None
    try:
        await locker.execute("BEGIN; LOCK TABLE outbox IN SHARE MODE")
        signup = asyncio.create_task(client.post("/api/v1/users", json=BODY))
        pid = await _blocked_insert(db)
        holds = await db.fetch(
            "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = $1 AND l.granted",
            pid,
        )
        assert ("users", "RowExclusiveLock") in [(h["relname"], h["mode"]) for h in holds]
        assert await db.fetchval("SELECT pg_terminate_backend($1)", pid)
        response = await asyncio.wait_for(signup, timeout=10)
    finally:
        await locker.close()
        if signup is not None and not signup.done():
            signup.cancel()

    assert_unavailable(response)
    assert await db.fetchval("SELECT count(*) FROM users") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0

    # The pool replaces the dead connection by itself (pool_pre_ping).
    again = await client.post("/api/v1/users", json=BODY)
    assert again.status_code == 202
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1


async def _blocked_insert(db: asyncpg.Connection) -> int:
    """The backend of the signup waiting to insert its outbox row."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid: int | None = await db.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO outbox%'"
        )
        if pid is not None:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError("the signup never reached its outbox insert")


async def test_the_api_recovers_by_itself_after_postgres_dropped_every_connection(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    assert (await client.post("/api/v1/users", json=BODY)).status_code == 202

    terminated = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    assert terminated >= 1
    # Answered from the database (an unknown token), not 503.
    assert (await client.post(VERIFY, json=UNKNOWN_TOKEN)).status_code == 400


async def test_a_database_that_accepts_but_never_answers_is_503_after_the_connect_timeout(
    settings: Settings, open_client: OpenClient
) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection open and say nothing
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = settings.model_copy(
        update={
            "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/herald",
            "database_connect_timeout_seconds": 0.3,
        }
    )
    try:
        async with open_client(silent) as http:
            started = time.monotonic()
            response = await http.post(VERIFY, json=UNKNOWN_TOKEN)
            waited = time.monotonic() - started
    finally:
        server.close()
        await server.wait_closed()

    assert_unavailable(response)
    assert waited < 5


SSL_REQUEST = 80877103
"""The request code of PostgreSQL's SSLRequest message."""


def _error_response(sqlstate: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse message (protocol 3.0): severity, code, text."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + (len(body) + 4).to_bytes(4, "big") + body


async def test_a_database_still_starting_up_is_503_not_500(
    settings: Settings, open_client: OpenClient
) -> None:
    """What PostgreSQL answers every connection while it replays its WAL after a
    restart: FATAL 57P03 "the database system is starting up" (seen in make chaos)."""

    async def starting_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            length = int.from_bytes(await reader.readexactly(4), "big")
            code = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(length - 8)
            if code != SSL_REQUEST:
                break  # the startup message
            writer.write(b"N")  # no TLS here: the client goes on in plain text
        writer.write(_error_response("57P03", "the database system is starting up"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(starting_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    restarting = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/herald"}
    )
    try:
        async with open_client(restarting) as http:
            signup = await http.post("/api/v1/users", json=BODY)
            verify = await http.post(VERIFY, json=UNKNOWN_TOKEN)
    finally:
        server.close()
        await server.wait_closed()

    assert_unavailable(signup)
    assert_unavailable(verify)

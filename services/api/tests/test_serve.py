"""A real ``herald-api serve`` process: how it holds connections, and how it dies."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from saq import Queue

from herald_api.core.faults import CRASH_STATUS
from herald_api.outbox.relay import Relay
from herald_shared.messages import WelcomeEmail
from herald_testing.processes import serve_api

BODY = {"email": "crash@example.com", "password": "correct horse battery", "display_name": "C"}


async def get_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One keep-alive HTTP/1.1 GET on an open connection; the status line."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: herald.test\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def test_an_idle_connection_outlives_the_clients_keep_alive(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    """httpx (and many clients) reuse an idle connection for up to 5 s; uvicorn's own
    default also closes it after 5 s, so a request sent just then met a closed socket
    ("Server disconnected without sending a response"). The server must wait longer."""
    async with serve_api(api_env, log_path=tmp_path / "api.log") as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            assert await get_on(reader, writer, "/health/live") == b"HTTP/1.1 200 OK"
            await asyncio.sleep(6)
            assert await get_on(reader, writer, "/health/live") == b"HTTP/1.1 200 OK"
        finally:
            writer.close()


async def test_exit_after_commit_leaves_the_user_and_a_pending_row_that_is_then_delivered(
    api_env: dict[str, str],
    db: asyncpg.Connection,
    notifier_queue: Queue,
    make_relay: Callable[..., Relay],
    tmp_path: Path,
) -> None:
    """HERALD_FAULT_EXIT_AFTER_COMMIT: the process exits in the middle of the request, as
    a SIGKILL or an OOM would end it there; the database must hold the user and its
    pending outbox row, and a relay must then deliver the welcome email."""
    env = {
        "HERALD_FAULT_EXIT_AFTER_COMMIT": "true",
        # No grace: only the crash keeps the row from being pushed at once.
        "HERALD_OUTBOX_FAST_PATH_GRACE_SECONDS": "0",
    }
    async with serve_api(api_env | env, log_path=tmp_path / "api.log") as served:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as http:
            with pytest.raises(httpx.TransportError):
                await http.post("/api/v1/users", json=BODY)
        status = await served.exit_status()

    events = served.events()
    assert status == CRASH_STATUS
    assert "fault.enabled" in events
    assert events.index("user.created") < events.index("fault.crash")
    assert "message.enqueued" not in events

    user = await db.fetchrow("SELECT id FROM users WHERE email = $1", BODY["email"])
    assert user is not None
    [row] = await db.fetch("SELECT * FROM outbox")
    assert (row["relayed_at"], row["attempts"]) == (None, 0)
    assert await notifier_queue.count("queued") == 0

    result = await make_relay().relay_once()

    assert result.relayed.total() == 1
    [job] = (await notifier_queue.info(jobs=True))["jobs"]
    assert job["key"] == str(row["message_id"])
    assert WelcomeEmail.decode(job["kwargs"]["payload"]).user_id == user["id"]

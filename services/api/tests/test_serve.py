"""A real ``herald-api serve`` process: how it holds connections, and how it dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from saq import Queue

from herald_api.faults import EXIT_AFTER_COMMIT_STATUS
from herald_api.relay import Relay
from herald_api.settings import Settings
from herald_shared.messages import WelcomeEmail
from herald_testing.ports import free_port

BODY = {"email": "crash@example.com", "password": "correct horse battery", "display_name": "C"}


def herald_api_command() -> str:
    beside_python = Path(sys.executable).with_name("herald-api")
    found = str(beside_python) if beside_python.exists() else shutil.which("herald-api")
    if found is None:
        pytest.fail("the herald-api console script is not installed")
    return found


async def wait_until_live(base_url: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base_url, timeout=1) as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                pytest.fail(f"herald-api exited early with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health/live")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail("herald-api did not start serving within 30 s")


@dataclass
class Served:
    port: int
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self) -> list[str]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line)["event"] for line in lines if line]


@asynccontextmanager
async def serve(
    settings: Settings, tmp_path: Path, env: Mapping[str, str] = {}
) -> AsyncIterator[Served]:
    """``herald-api serve`` on a free port with the test's database and Redis, plus ``env``."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")} | {
        "HERALD_DATABASE_URL": str(settings.database_url),
        "HERALD_REDIS_URL": settings.redis_url,
        "HERALD_QUEUE_NAMESPACE": settings.queue_namespace,
        "HERALD_HASH_WORKERS": "1",
        "HERALD_LOG_FORMAT": "json",
        "HERALD_LINK_SECRET": settings.link_secret.get_secret_value(),
        "HERALD_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "HERALD_METRICS_PORT": "0",
        **env,
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log_file:
        # cwd: a directory without a .env that could change the settings.
        process = await asyncio.create_subprocess_exec(
            herald_api_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=full_env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            served = Served(port, process, log_path)
            await wait_until_live(served.base_url, process)
            yield served
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


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
    settings: Settings, tmp_path: Path
) -> None:
    """httpx (and many clients) reuse an idle connection for up to 5 s; uvicorn's own
    default also closes it after 5 s, so a request sent just then met a closed socket
    ("Server disconnected without sending a response"). The server must wait longer."""
    async with serve(settings, tmp_path) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            assert await get_on(reader, writer, "/health/live") == b"HTTP/1.1 200 OK"
            await asyncio.sleep(6)
            assert await get_on(reader, writer, "/health/live") == b"HTTP/1.1 200 OK"
        finally:
            writer.close()


async def test_exit_after_commit_leaves_the_user_and_a_pending_row_that_is_then_delivered(
    settings: Settings,
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
    async with serve(settings, tmp_path, env) as served:
        async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as http:
            with pytest.raises(httpx.TransportError):
                await http.post("/api/v1/users", json=BODY)
        status = await asyncio.wait_for(served.process.wait(), timeout=10)

    events = served.events()
    assert status == EXIT_AFTER_COMMIT_STATUS
    assert "fault.enabled" in events
    assert events.index("user.created") < events.index("fault.exit_after_commit")
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

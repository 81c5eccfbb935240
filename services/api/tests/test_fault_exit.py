"""HERALD_FAULT_EXIT_AFTER_COMMIT: a real ``herald-api serve`` dying between commit and push.

The process exits in the middle of the request, as a SIGKILL or an OOM would
end it there; the database must hold the user and its pending outbox row, and
a relay must then deliver the welcome email.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
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


async def test_exit_after_commit_leaves_the_user_and_a_pending_row_that_is_then_delivered(
    settings: Settings,
    database_url: str,
    redis_url: str,
    queue_namespace: str,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    make_relay: Callable[..., Relay],
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")} | {
        "HERALD_DATABASE_URL": database_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_FAULT_EXIT_AFTER_COMMIT": "true",
        # No grace: only the crash keeps the row from being pushed at once.
        "HERALD_OUTBOX_FAST_PATH_GRACE_SECONDS": "0",
        "HERALD_HASH_WORKERS": "1",
        "HERALD_LOG_FORMAT": "json",
        "HERALD_LINK_SECRET": settings.link_secret.get_secret_value(),
        "HERALD_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "HERALD_METRICS_PORT": "0",
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
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            await wait_until_live(base_url, process)
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                with pytest.raises(httpx.TransportError):
                    await http.post("/api/v1/users", json=BODY)
            status = await asyncio.wait_for(process.wait(), timeout=10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    assert status == EXIT_AFTER_COMMIT_STATUS
    events = [json.loads(line)["event"] for line in log_path.read_text().splitlines() if line]
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

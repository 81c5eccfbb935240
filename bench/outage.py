"""Item 5: how long the outbox relay takes to push 1,000 pending rows once Redis is back.

The shared Redis on 6379 is never stopped: the harness starts a Redis of its
own on a free port (no persistence; its data is gone with it) and an API
process (``herald-api serve``, relay included, default settings) whose
``HERALD_REDIS_URL`` points at it. Then:

1. once the API is ready, that Redis is stopped;
2. ``rows`` pending outbox rows (valid ``WelcomeEmail`` v2 payloads, due at
   once) are inserted into the bench database, as signups during an outage
   leave them; the relay's passes fail and back off (to its 1 s cap);
3. after ``outage_seconds`` a Redis is started again on the same port: the
   clock starts just before it is launched;
4. drained = when no row of the batch is pending any more (polled every
   10 ms in PostgreSQL); the new Redis is then checked to hold the jobs.

No other relay may run on the database meanwhile (the harness has stopped
its other API first), or it would take the rows.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from dataclasses import dataclass

import asyncpg
import httpx

from bench.common import BIN, Processes, recipient, wait_ready
from herald_shared import queues
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port, wait_for_port


@dataclass
class OutageResult:
    rows: int
    pending_before: int
    """Rows still pending when Redis came back (all of them, unless a push slipped through)."""
    drained_seconds: float
    jobs_in_redis: int


def redis_command(port: int, procs: Processes) -> list[str]:
    server = shutil.which("redis-server")
    if server is None:
        raise RuntimeError("redis-server not found: item 5 starts a Redis of its own")
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(procs.log_dir),
    ]


async def insert_pending(database_url: str, *, rows: int, tag: str) -> list[uuid.UUID]:
    task = SEND_WELCOME_EMAIL
    messages = [
        welcome_email(email=recipient(tag, i), display_name="Bench User") for i in range(rows)
    ]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO outbox (message_id, task, queue, payload, available_at) "
            "VALUES ($1, $2, $3, $4::jsonb, now())",
            [(m.message_id, task.name, task.queue, json.dumps(m.encode())) for m in messages],
        )
    finally:
        await conn.close()
    return [m.message_id for m in messages]


async def pending(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM outbox WHERE relayed_at IS NULL AND message_id = ANY($1::uuid[])",
        ids,
    )
    return int(count)


async def outage_drain(
    procs: Processes,
    *,
    database_url: str,
    run_id: str,
    rows: int,
    outage_seconds: float,
) -> OutageResult:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    namespace = f"bench_{run_id}_outage"
    procs.start("redis-outage", *redis_command(port, procs))
    wait_for_port("127.0.0.1", port, what="bench Redis")
    api_port = free_port()
    procs.start(
        "api-outage",
        str(BIN / "herald-api"),
        "serve",
        env=procs.env
        | {
            "HERALD_REDIS_URL": redis_url,
            "HERALD_API_PORT": str(api_port),
            "HERALD_QUEUE_NAMESPACE": namespace,
        },
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:
        await wait_ready(client, "/health/ready")
    try:
        procs.stop("redis-outage")
        ids = await insert_pending(database_url, rows=rows, tag=f"o{run_id}")
        await asyncio.sleep(outage_seconds)
        conn = await asyncpg.connect(database_url)
        try:
            before = await pending(conn, ids)
            began = time.perf_counter()
            procs.start("redis-back", *redis_command(port, procs))
            deadline = began + 120
            while await pending(conn, ids) > 0:
                if time.perf_counter() > deadline:
                    raise TimeoutError("outbox not drained within 120 s of Redis's return")
                await asyncio.sleep(0.01)
            drained = time.perf_counter() - began
        finally:
            await conn.close()
        queue = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=namespace)
        await queue.connect()
        try:
            jobs = await queue.count("incomplete")
        finally:
            await queue.disconnect()
    finally:
        procs.stop("api-outage")
        for name in ("redis-outage", "redis-back"):
            if name in procs.running:
                procs.stop(name)
    return OutageResult(rows, before, drained, jobs)

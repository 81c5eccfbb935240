"""The outbox relay: drains what the fast path missed, once per row, and survives outages."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from redis.exceptions import RedisError
from saq import Queue
from structlog.testing import capture_logs

from herald_api.core.db import create_engine, session_factory
from herald_api.core.settings import Settings
from herald_api.main import create_app
from herald_api.outbox.relay import Relay
from herald_shared import queues
from herald_shared.messages import WelcomeEmail
from herald_testing.clients import OpenClient
from herald_testing.ports import free_port
from herald_testing.waiting import eventually

T = TypeVar("T")
InsertPending = Callable[..., Awaitable[list[uuid.UUID]]]
MakeRelay = Callable[..., Relay]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def relayed_total() -> float:
    return metric("herald_api_outbox_relayed_total", message_type="WelcomeEmail")


def relay_errors(reason: str) -> float:
    return metric("herald_api_outbox_relay_errors_total", reason=reason)


async def pending(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")
    return count


async def queued_keys(queue: Queue) -> list[str]:
    info = await queue.info(jobs=True, limit=10_000)
    return sorted(job["key"] for job in info["jobs"])


@pytest.fixture
async def dead_redis_queue() -> AsyncIterator[Queue]:
    """The notifier queue on a Redis port where nothing listens."""
    queue = queues.connect_queue(f"redis://127.0.0.1:{free_port()}/0", queues.NOTIFIER)
    yield queue
    with contextlib.suppress(RedisError):
        await queue.disconnect()


async def test_signups_during_a_redis_outage_stay_pending_then_drain_once_redis_is_there(
    settings: Settings,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    make_relay: MakeRelay,
    open_client: OpenClient,
) -> None:
    down = settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
            "outbox_max_backoff_seconds": 0.1,
        }
    )
    async with open_client(down) as http:
        statuses = [
            (
                await http.post(
                    "/api/v1/users",
                    json={"email": f"u{i}@example.com", "password": "p" * 12, "display_name": "U"},
                )
            ).status_code
            for i in range(20)
        ]
    assert statuses == [202] * 20
    assert await pending(db) == 20
    assert await db.fetchval("SELECT min(attempts) FROM outbox") >= 1
    assert await db.fetchval("SELECT bool_and(last_error LIKE '%ConnectionError%') FROM outbox")
    relayed_before = relayed_total()

    relay = make_relay()
    relay.start()
    await eventually(lambda: _none_pending(db), within=5, what="20 rows relayed")
    await relay.stop()

    ids = sorted(str(r["message_id"]) for r in await db.fetch("SELECT message_id FROM outbox"))
    assert await queued_keys(notifier_queue) == ids
    assert relayed_total() == relayed_before + 20
    users = {str(r["id"]) for r in await db.fetch("SELECT id FROM users")}
    jobs = (await notifier_queue.info(jobs=True, limit=100))["jobs"]
    assert {str(WelcomeEmail.decode(job["kwargs"]["payload"]).user_id) for job in jobs} == users


async def _none_pending(db: asyncpg.Connection) -> bool:
    return await pending(db) == 0


async def test_two_relays_on_the_same_500_rows_push_each_exactly_once(
    *,
    settings: Settings,
    db: asyncpg.Connection,
    redis_url: str,
    queue_namespace: str,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    ids = await insert_pending(500)
    relayed_before = relayed_total()
    engines = [create_engine(settings) for _ in range(2)]
    own_queues = [
        queues.connect_queue(redis_url, queues.NOTIFIER, namespace=queue_namespace)
        for _ in range(2)
    ]
    relays = [
        Relay(
            sessions=session_factory(engine),
            queues={queues.NOTIFIER: queue},
            # Small batches: the relays interleave over many claims.
            batch_size=25,
            poll_seconds=0.05,
            max_backoff_seconds=1.0,
            push_timeout_seconds=2.0,
        )
        for engine, queue in zip(engines, own_queues, strict=True)
    ]
    try:
        with capture_logs() as logs:
            for relay in relays:
                relay.start()
            await eventually(lambda: _none_pending(db), within=20, what="500 rows relayed")
            for relay in relays:
                await relay.stop()
    finally:
        for relay in relays:
            await relay.stop()
        for queue in own_queues:
            await queue.disconnect()
        for engine in engines:
            await engine.dispose()

    assert await queued_keys(notifier_queue) == sorted(str(i) for i in ids)
    # Had both pushed a row, SAQ would have refused the second push (same key)
    # and the relay would have counted it twice: 500 proves one push per row.
    assert relayed_total() == relayed_before + 500
    batches = [line for line in logs if line["event"] == "outbox.relayed"]
    assert sum(line["relayed"] for line in batches) == 500
    assert sum(line["already_queued"] for line in batches) == 0
    assert await db.fetchval("SELECT max(attempts) FROM outbox") == 0


async def test_a_redis_failure_defers_the_unpushed_rows_with_a_capped_backoff(
    db: asyncpg.Connection,
    make_relay: MakeRelay,
    dead_redis_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    await insert_pending(3)
    errors = relay_errors("redis")
    relay = make_relay(queues={queues.NOTIFIER: dead_redis_queue}, max_backoff_seconds=0.3)

    with capture_logs() as logs:
        before, first, after = await _timed(db, relay.relay_once())
    rows = await db.fetch("SELECT * FROM outbox")

    assert first.claimed == 3
    assert first.deferred == 3
    assert first.relayed.total() == 0
    assert first.push_error is not None
    assert "ConnectionError" in first.push_error
    assert relay_errors("redis") == errors + 1
    assert [line["event"] for line in logs] == ["outbox.push_failed"]
    for row in rows:
        assert row["attempts"] == 1
        assert "ConnectionError" in row["last_error"]
        assert row["relayed_at"] is None
        # The first retry is due 0.1 s after the failure.
        step = timedelta(seconds=0.1)
        assert before + step < row["available_at"] < after + step

    # Each failure doubles the delay, never beyond the cap.
    await db.execute("UPDATE outbox SET available_at = now(), attempts = 5")
    before, _, after = await _timed(db, relay.relay_once())
    cap = timedelta(seconds=0.3)
    for row in await db.fetch("SELECT * FROM outbox"):
        assert row["attempts"] == 6
        assert before + cap < row["available_at"] < after + cap


async def _timed(db: asyncpg.Connection, work: Awaitable[T]) -> tuple[datetime, T, datetime]:
    """PostgreSQL's clock before and after ``work``, and its result."""
    before = await db.fetchval("SELECT clock_timestamp()")
    result = await work
    after = await db.fetchval("SELECT clock_timestamp()")
    return before, result, after


async def test_the_relay_survives_postgres_being_down_and_stops_cleanly(
    settings: Settings, make_relay: MakeRelay
) -> None:
    dead = settings.model_copy(
        update={"database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/herald"}
    )
    engine = create_engine(dead)
    errors = relay_errors("database")
    relay = make_relay(sessions=session_factory(engine), max_backoff_seconds=0.2)
    try:
        with capture_logs() as logs:
            relay.start()
            await eventually(
                _async(lambda: relay_errors("database") >= errors + 3),
                within=5,
                what="three failed passes",
            )
            task = relay._task
            assert task is not None
            assert not task.done()
            started = time.monotonic()
            await relay.stop()
            stopped_in = time.monotonic() - started
    finally:
        await engine.dispose()

    assert task.done()
    assert not task.cancelled()
    assert task.exception() is None
    assert stopped_in < 1
    failures = [line for line in logs if line["event"] == "outbox.relay_failed"]
    assert len(failures) >= 3
    assert "ConnectionRefusedError" in failures[0]["error"]
    assert [f["retry_in_seconds"] for f in failures[:3]] == [0.1, 0.2, 0.2]


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def run() -> bool:
        return check()

    return run


async def test_a_row_that_can_never_be_pushed_is_set_aside_and_the_rest_flow(
    db: asyncpg.Connection,
    make_relay: MakeRelay,
    insert_pending: InsertPending,
    notifier_queue: Queue,
) -> None:
    [good] = await insert_pending(1)
    poison = uuid.uuid4()
    await db.execute(
        "INSERT INTO outbox (message_id, task, queue, payload, available_at) "
        "VALUES ($1, 'send_welcome_email', 'notifier', $2::jsonb, now() - interval '1 s')",
        poison,
        json.dumps({"schema_version": 99, "message_id": str(poison)}),
    )
    rejected = relay_errors("rejected")

    with capture_logs() as logs:
        result = await make_relay().relay_once()
        again = await make_relay().relay_once()

    assert (result.claimed, result.relayed.total(), result.rejected) == (2, 1, 1)
    assert again.claimed == 0
    assert await queued_keys(notifier_queue) == [str(good)]
    row = await db.fetchrow("SELECT * FROM outbox WHERE message_id = $1", poison)
    assert row["relayed_at"] is None
    assert row["available_at"] == row["available_at"].max  # infinity, as asyncpg reads it
    assert "unsupported version 99" in row["last_error"]
    assert relay_errors("rejected") == rejected + 1
    [rejection] = [line for line in logs if line["event"] == "outbox.message_rejected"]
    assert rejection["message_id"] == str(poison)
    # Still pending, so the gauge keeps showing it until someone deals with it.
    assert metric("herald_api_outbox_pending") == 1


async def test_one_log_line_and_one_gauge_update_per_batch(
    db: asyncpg.Connection, make_relay: MakeRelay, insert_pending: InsertPending
) -> None:
    await insert_pending(7)
    await insert_pending(2, available_at="now() + interval '1 hour'")

    with capture_logs() as logs:
        result = await make_relay(batch_size=5).relay_once()
        second = await make_relay(batch_size=5).relay_once()
        idle = await make_relay(batch_size=5).relay_once()

    assert [result.relayed.total(), second.relayed.total(), idle.claimed] == [5, 2, 0]
    batches = [line for line in logs if line["event"] == "outbox.relayed"]
    assert [(b["relayed"], b["pending"]) for b in batches] == [(5, 4), (2, 2)]
    assert len(logs) == 2
    assert metric("herald_api_outbox_pending") == 2


async def test_the_api_runs_a_relay_for_its_lifetime(
    settings: Settings,
    db: asyncpg.Connection,
    insert_pending: InsertPending,
    notifier_queue: Queue,
) -> None:
    ids = await insert_pending(3)
    app = create_app(settings.model_copy(update={"outbox_poll_seconds": 0.05}))

    async with LifespanManager(app):
        await eventually(lambda: _none_pending(db), within=5, what="the API's relay ran")
        relay = app.state.outbox.relay
        task = relay._task

    assert task is not None
    assert task.done()
    assert relay._task is None
    assert await queued_keys(notifier_queue) == sorted(str(i) for i in ids)

"""``POST /internal/v1/outbox/reconcile``: a relayed row leaves the books only once
Redis shows its message delivered (or dead); a message Redis lost is pushed again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from saq import Queue, Status
from saq.queue.redis import RedisQueue
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_shared.ledger import dead_letters_key, delivery_record_key, saq_key
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import enqueue
from herald_testing.clients import OpenClient
from herald_testing.ports import free_port

TOKEN = "internal-token-for-tests-only"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECONCILE = "/internal/v1/outbox/reconcile"
FIVE_MINUTES = {"older_than_seconds": 300}
LONG_AGO = "now() - interval '10 minutes'"

InsertPending = Callable[..., Awaitable[list[uuid.UUID]]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"internal_token": SecretStr(TOKEN)})


def redis_of(queue: Queue) -> RedisQueue:
    assert isinstance(queue, RedisQueue)
    return queue


def reconciled(outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("herald_api_outbox_reconciled_total", {"outcome": outcome}) or 0
    )


async def relayed(
    insert_pending: InsertPending, count: int = 1, *, ago: str = LONG_AGO
) -> list[uuid.UUID]:
    """Rows relayed (and last checked) ``ago``, nothing of them in Redis yet."""
    return await insert_pending(count, relayed_at=ago, checked_at=ago)


async def reconcile(client: httpx.AsyncClient) -> httpx.Response:
    """Ask for the reconciliation of rows relayed over five minutes ago, as the scheduler does."""
    return await client.post(RECONCILE, json=FIVE_MINUTES, headers=AUTH)


async def relayed_and_pushed(
    insert_pending: InsertPending, db: asyncpg.Connection, queue: Queue
) -> uuid.UUID:
    """One row relayed long ago whose message is in Redis, as the relay left it."""
    [message_id] = await relayed(insert_pending)
    await push(db, queue, message_id)
    return message_id


async def push(db: asyncpg.Connection, queue: Queue, message_id: uuid.UUID) -> None:
    """Push the row's message as the relay did."""
    payload = await db.fetchval("SELECT payload FROM outbox WHERE message_id = $1", message_id)
    assert await enqueue(queue, WelcomeEmail.decode(json.loads(payload))) is not None


async def delivered(queue: Queue, message_id: uuid.UUID, *, result: str = "sent") -> None:
    """The notifier ran the job to completion as it does: its record says ``sent`` (any
    other ``result``: ``skipped``, completed unsent), and the finished job is deleted."""
    job = await queue.dequeue()
    assert job is not None
    assert job.key == str(message_id)
    record = delivery_record_key(queue.name, message_id)
    await redis_of(queue).redis.set(record, "sent:" if result == "sent" else "skipped:")
    await queue.finish(job, Status.COMPLETE, result=result)
    await redis_of(queue).redis.delete(job.id)


async def row(db: asyncpg.Connection, message_id: uuid.UUID) -> asyncpg.Record:
    found = await db.fetchrow(
        "SELECT settled_as, settled_at IS NOT NULL AS settled, repushes, "
        "checked_at > now() - interval '1 minute' AS just_checked, "
        "relayed_at > now() - interval '1 minute' AS just_relayed "
        "FROM outbox WHERE message_id = $1",
        message_id,
    )
    assert found is not None
    return found


async def test_a_delivered_message_settles_its_row(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    message_id = await relayed_and_pushed(insert_pending, db, notifier_queue)
    await delivered(notifier_queue, message_id)
    before = reconciled("delivered")

    response = await reconcile(client)

    assert response.status_code == 200
    assert response.json()["delivered"] == 1
    assert (await row(db, message_id))["settled_as"] == "delivered"
    assert reconciled("delivered") == before + 1
    # Off the books: the next pass does not look at it again.
    again = (await reconcile(client)).json()
    assert again["delivered"] == again["waiting"] == again["repushed"] == 0


async def test_a_job_completed_unsent_settles_its_row_as_skipped(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    message_id = await relayed_and_pushed(insert_pending, db, notifier_queue)
    await delivered(notifier_queue, message_id, result="link_expired")

    response = await reconcile(client)

    assert response.json()["skipped"] == 1
    assert (await row(db, message_id))["settled_as"] == "skipped"
    assert await notifier_queue.count("queued") == 0


async def test_a_dead_letter_settles_its_row_as_dead_visibly(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    message_id = await relayed_and_pushed(insert_pending, db, notifier_queue)
    job = await notifier_queue.dequeue()
    assert job is not None
    letters = dead_letters_key(notifier_queue.name)
    await redis_of(notifier_queue).redis.hset(letters, str(message_id), "{}")  # type: ignore[misc]
    await notifier_queue.finish(job, Status.FAILED, error="550 no such user")
    before = reconciled("dead")

    with capture_logs() as logs:
        response = await reconcile(client)

    assert response.json()["dead"] == 1
    assert (await row(db, message_id))["settled_as"] == "dead"
    assert reconciled("dead") == before + 1
    [warning] = [line for line in logs if line["event"] == "outbox.settled_dead"]
    assert warning["message_id"] == str(message_id)
    assert warning["log_level"] == "warning"
    assert await notifier_queue.count("queued") == 0


async def test_a_live_job_is_waited_for_and_checked_again_only_after_the_interval(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    message_id = await relayed_and_pushed(insert_pending, db, notifier_queue)

    first = (await reconcile(client)).json()
    second = (await reconcile(client)).json()

    assert (first["waiting"], first["repushed"]) == (1, 0)
    assert second["waiting"] == 0
    state = await row(db, message_id)
    assert (state["settled"], state["just_checked"], state["repushes"]) == (False, True, 0)
    assert await notifier_queue.count("queued") == 1


async def test_a_message_redis_lost_is_pushed_again_under_its_own_key(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    """Relayed, then lost: a Redis host crash took the job's last second of writes."""
    [message_id] = await relayed(insert_pending)
    before = reconciled("repushed")

    with capture_logs() as logs:
        response = await reconcile(client)

    assert response.json()["repushed"] == 1
    job = await notifier_queue.job(str(message_id))
    assert job is not None
    assert job.status is Status.QUEUED
    queued_key = saq_key(notifier_queue.name, "queued")
    queued = await redis_of(notifier_queue).redis.lrange(queued_key, 0, -1)  # type: ignore[misc]
    assert queued == [job.id.encode()]
    state = await row(db, message_id)
    assert (state["settled"], state["repushes"], state["just_relayed"]) == (False, 1, True)
    assert reconciled("repushed") == before + 1
    [warning] = [line for line in logs if line["event"] == "outbox.repushed"]
    assert (warning["message_id"], warning["standing"]) == (str(message_id), "missing")


async def test_a_job_left_in_no_list_by_a_dying_sweep_is_pushed_again(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    message_id = await relayed_and_pushed(insert_pending, db, notifier_queue)
    job = await notifier_queue.dequeue()
    assert job is not None
    await notifier_queue.abort(job, error="swept")
    # The abort key, which refuses an enqueue of the key, lives 5 s; the sweep died long ago.
    await redis_of(notifier_queue).redis.delete(job.abort_id)

    response = await reconcile(client)

    assert response.json()["repushed"] == 1
    stored = await notifier_queue.job(str(message_id))
    assert stored is not None
    assert stored.status is Status.QUEUED
    assert await notifier_queue.count("queued") == 1


async def test_rows_pending_or_checked_recently_are_left_alone(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    """The fast path and the relay own pending rows; a row pushed a minute ago may
    simply not have reached its worker yet."""
    # Set aside, so that the app's own relay leaves them alone too.
    await insert_pending(2, created_at="now() - interval '1 hour'", available_at="'infinity'")
    recent = await relayed(insert_pending, 2, ago="now() - interval '1 minute'")

    response = await reconcile(client)

    body = response.json()
    assert body["repushed"] == body["waiting"] == 0
    assert await notifier_queue.count("queued") == 0
    for message_id in recent:
        assert (await row(db, message_id))["repushes"] == 0


async def test_a_backlog_is_worked_through_in_batches(
    settings: Settings,
    open_client: OpenClient,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    insert_pending: InsertPending,
) -> None:
    ids = await relayed(insert_pending, 7)

    async with open_client(settings.model_copy(update={"outbox_batch_size": 3})) as http:
        response = await http.post(RECONCILE, json=FIVE_MINUTES, headers=AUTH)

    assert response.json()["repushed"] == 7
    assert await notifier_queue.count("queued") == 7
    assert (
        await db.fetchval("SELECT sum(repushes) FROM outbox WHERE message_id = ANY($1)", ids) == 7
    )


async def test_the_oldest_unsettled_row_is_measured(
    client: httpx.AsyncClient, insert_pending: InsertPending
) -> None:
    await insert_pending(1, created_at="now() - interval '2 hours'", available_at="'infinity'")
    await insert_pending(1, created_at="now() - interval '1 hour'")

    body = (await reconcile(client)).json()

    assert 7200 <= body["oldest_unsettled_seconds"] < 7300
    gauge = REGISTRY.get_sample_value("herald_api_outbox_oldest_unsettled_seconds")
    assert gauge == body["oldest_unsettled_seconds"]


async def test_without_unsettled_rows_the_oldest_is_zero(client: httpx.AsyncClient) -> None:
    body = (await reconcile(client)).json()

    assert body["oldest_unsettled_seconds"] == 0


async def test_the_reconciliation_needs_the_internal_token(
    client: httpx.AsyncClient, notifier_queue: Queue, insert_pending: InsertPending
) -> None:
    await relayed(insert_pending)

    response = await client.post(RECONCILE, json=FIVE_MINUTES)

    assert response.status_code == 401
    assert await notifier_queue.count("queued") == 0


async def test_redis_down_is_a_503_and_changes_no_row(
    settings: Settings,
    open_client: OpenClient,
    db: asyncpg.Connection,
    insert_pending: InsertPending,
) -> None:
    [message_id] = await relayed(insert_pending)
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})

    async with open_client(down) as http:
        response = await http.post(RECONCILE, json=FIVE_MINUTES, headers=AUTH)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    state = await row(db, message_id)
    assert (state["settled"], state["just_checked"], state["repushes"]) == (False, False, 0)

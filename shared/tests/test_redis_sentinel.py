"""Herald's Redis client through a real Sentinel: messages land on the master, and a
failover moves the client to the new master without losing what was queued."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from saq import Queue

from herald_shared import queues
from herald_shared.redis_client import RedisTarget, parse_sentinels, redis_client
from herald_shared.tasks import enqueue
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port
from herald_testing.sentinel import MASTER_NAME, SentinelSet

NAMESPACE = "sentinel-test"


def target(cluster: SentinelSet, *, sentinels: str | None = None) -> RedisTarget:
    """The target Herald's settings give for ``cluster`` (the URL's host is not used)."""
    return RedisTarget(
        url="redis://unused.invalid:1/0",
        sentinels=parse_sentinels(sentinels or cluster.sentinels),
        master=MASTER_NAME,
    )


@pytest.fixture
async def queue(redis_sentinels: SentinelSet) -> AsyncIterator[Queue]:
    notifier = queues.connect_queue(target(redis_sentinels), queues.NOTIFIER, namespace=NAMESPACE)
    await notifier.connect()
    yield notifier
    await notifier.disconnect()


def job_key(queue: Queue, key: str) -> str:
    return f"saq:job:{queue.name}:{key}"


async def test_an_enqueued_message_lands_on_the_master(
    queue: Queue, redis_sentinels: SentinelSet
) -> None:
    job = await enqueue(queue, welcome_email())
    assert job is not None

    with redis_sentinels.server(redis_sentinels.redis_ports[0]) as server:
        assert server.exists(job_key(queue, job.key)) == 1
        assert server.info("replication")["role"] == "master"
    stored = await queue.job(job.key)
    assert stored is not None
    assert stored.function == job.function


async def test_after_a_failover_the_queue_follows_the_new_master(
    queue: Queue, redis_sentinels: SentinelSet
) -> None:
    before = await enqueue(queue, welcome_email())
    assert before is not None

    new_master = redis_sentinels.failover()
    after = await enqueue(queue, welcome_email())

    assert after is not None
    with redis_sentinels.server(new_master) as server:
        assert server.info("replication")["role"] == "master"
        # Queued before the failover (replicated), and after it (written there).
        assert server.exists(job_key(queue, before.key), job_key(queue, after.key)) == 2
        assert server.llen(f"saq:{queue.name}:queued") == 2
    assert [await queue.job(j.key) is not None for j in (before, after)] == [True, True]


async def test_an_unreachable_sentinel_is_passed_over(redis_sentinels: SentinelSet) -> None:
    listed = f"127.0.0.1:{free_port()},{redis_sentinels.sentinels}"
    client = redis_client(target(redis_sentinels, sentinels=listed))
    try:
        assert await client.set("herald:probe", "1")
    finally:
        await client.aclose()

    with redis_sentinels.server(redis_sentinels.master_port()) as server:
        assert server.get("herald:probe") == "1"


async def test_closing_the_client_closes_its_sentinel_connections(
    redis_sentinels: SentinelSet,
) -> None:
    def sentinel_clients() -> int:
        with redis_sentinels.server(redis_sentinels.sentinel_ports[0]) as sentinel:
            # Less the one asking.
            return len(sentinel.client_list()) - 1

    before = sentinel_clients()
    client = redis_client(target(redis_sentinels))
    assert await client.set("herald:probe", "1")
    assert sentinel_clients() > before

    await client.aclose()

    assert sentinel_clients() == before

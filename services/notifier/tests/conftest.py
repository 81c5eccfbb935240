"""Fixtures of the notifier's tests: a queue of the test's own, settings aimed at
it, and its delivery records and dead letters as the notifier keeps them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from herald_notifier.dead_letters import DeadLetters
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.settings import Settings
from herald_shared import queues
from herald_testing.jobs import FINISHED_JOB_SECONDS
from herald_testing.messages import LINK_SECRET


@pytest.fixture
def settings_for(redis_url: str, queue_namespace: str) -> Callable[..., Settings]:
    """Notifier settings on this test's queue, sending to ``smtp_host:smtp_port``,
    deriving link tokens with ``herald_testing.messages.LINK_SECRET``.

    The metrics server is off: the registry is read in-process, and a port
    bound by one test would stay bound for the whole run. Finished jobs are kept
    (without their message) for ``FINISHED_JOB_SECONDS``, so that a test can read
    how each ended; production deletes them (``test_retention``).
    """

    def make(*, smtp_port: int, smtp_host: str = "127.0.0.1", **overrides: Any) -> Settings:
        overrides.setdefault("metrics_port", 0)
        overrides.setdefault("notifier_finished_job_seconds", FINISHED_JOB_SECONDS)
        overrides.setdefault("link_secret", LINK_SECRET)
        return Settings(
            redis_url=redis_url,
            queue_namespace=queue_namespace,
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_timeout=5.0,
            notifier_shutdown_grace_seconds=0,
            **overrides,
        )

    return make


@pytest.fixture
async def notifier_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def deliveries(notifier_redis: aioredis.Redis, queue_namespace: str) -> DeliveryRecords:
    """The delivery records of this test's notifier queue."""
    name = queues.queue_name(queues.NOTIFIER, namespace=queue_namespace)
    return DeliveryRecords(notifier_redis, queue_name=name, record_ttl=timedelta(days=30))


@pytest.fixture
def dead_letters(notifier_redis: aioredis.Redis, queue_namespace: str) -> DeadLetters:
    """The dead-letter store of this test's notifier queue."""
    name = queues.queue_name(queues.NOTIFIER, namespace=queue_namespace)
    return DeadLetters(notifier_redis, queue_name=name)

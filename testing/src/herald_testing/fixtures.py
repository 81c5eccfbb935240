"""pytest fixtures giving every Herald test real backing services.

Registered as a pytest plugin (entry point ``pytest11``), so every test suite
in the workspace can ask for them:

- ``postgres_url``: a PostgreSQL superuser URL (session); services create
  their own per-test databases on it.
- ``redis_url``: a Redis URL (session); ``queue_namespace`` gives each test a
  fresh namespace and deletes its keys afterwards.
- ``notifier_queue``: the notifier's SAQ queue in the test's namespace,
  connected, as a producer sees it; ``unswept_notifier_queue`` the same for a
  plain SAQ worker, without the sweep that races its first dequeue.
- ``maildev`` / ``mailbox``: a real SMTP server with an HTTP API (session), and
  a client on it emptied before each test.
- ``redis_sentinels``: a Redis master, its replica and a Sentinel of the test's
  own (``herald_testing.sentinel``); skipped where redis-sentinel is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from saq import Queue

from herald_shared import queues
from herald_testing import backends
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.maildev import maildev as start_maildev
from herald_testing.sentinel import SENTINEL_MISSING, SentinelSet, sentinel_binary, sentinel_set


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with backends.postgres_url() as url:
            yield url
    except backends.BackendUnavailableError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        with backends.redis_url() as url:
            yield url
    except backends.BackendUnavailableError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def maildev() -> Iterator[MailDev]:
    try:
        with start_maildev() as server:
            yield server
    except backends.BackendUnavailableError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture
def redis_sentinels() -> Iterator[SentinelSet]:
    """A master, a replica and a Sentinel of this test's own (a failover changes them)."""
    if sentinel_binary() is None:
        pytest.skip(SENTINEL_MISSING)
    with sentinel_set() as cluster:
        yield cluster


@pytest.fixture
async def mailbox(maildev: MailDev) -> AsyncIterator[MailDevClient]:
    client = MailDevClient(maildev.api_url)
    await client.clear()
    yield client
    await client.aclose()


@pytest.fixture
async def queue_namespace(redis_url: str) -> AsyncIterator[str]:
    """A Redis namespace of this test's own; its keys are deleted afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"*{namespace}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def notifier_queue(redis_url: str, queue_namespace: str) -> AsyncIterator[Queue]:
    queue = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=queue_namespace)
    await queue.connect()
    yield queue
    await queue.disconnect()


@pytest.fixture
def unswept_notifier_queue(notifier_queue: Queue, monkeypatch: pytest.MonkeyPatch) -> Queue:
    """``notifier_queue`` for a plain SAQ worker, without SAQ's sweep.

    The sweep a worker runs as it starts can abort a job it has just dequeued
    but not yet marked active (SAQ does the two in separate steps). The
    notifier's own queue (``herald_notifier.queue``) closes that race; tests of
    a plain worker that are not about sweeps use this queue to stay clear of it.
    """

    async def no_sweep(*_args: Any, **_kwargs: Any) -> list[str]:
        return []

    monkeypatch.setattr(notifier_queue, "sweep", no_sweep)
    return notifier_queue

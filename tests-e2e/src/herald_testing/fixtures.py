"""pytest fixtures giving every Herald test real backing services.

Registered as a pytest plugin (entry point ``pytest11``), so every test suite
in the workspace can ask for them:

- ``postgres_url``: a PostgreSQL superuser URL (session); services create
  their own per-test databases on it.
- ``redis_url``: a Redis URL (session); ``queue_namespace`` gives each test a
  fresh namespace and deletes its keys afterwards.
- ``notifier_queue``: the notifier's SAQ queue in the test's namespace,
  connected, as a producer sees it.
- ``maildev`` / ``mailbox``: a real SMTP server with an HTTP API (session), and
  a client on it emptied before each test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from saq import Queue

from herald_shared import queues
from herald_testing import backends
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.maildev import maildev as start_maildev


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

"""What the API holds open for its lifetime: database pool, queue, hasher."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.db import create_engine, session_factory
from herald_api.dispatch import Dispatcher
from herald_api.passwords import PasswordHasher
from herald_api.settings import Settings
from herald_shared import queues

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    notifier_queue: Queue
    dispatcher: Dispatcher
    hasher: PasswordHasher


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    engine = create_engine(settings)
    queue = queues.connect_queue(
        settings.redis_url, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    await queue.connect()
    hasher = PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
    )
    try:
        yield Resources(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            notifier_queue=queue,
            dispatcher=Dispatcher(queue, timeout_seconds=settings.enqueue_timeout_seconds),
            hasher=hasher,
        )
    finally:
        hasher.close()
        try:
            await queue.disconnect()
        except (RedisError, OSError) as exc:
            # Shutting down while Redis is unreachable must still shut down.
            log.warning("queue.disconnect_failed", error=repr(exc))
        await engine.dispose()

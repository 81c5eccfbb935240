"""What core holds open for the API's lifetime: the database pool (and readiness's own
connection), and the queues."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.db import create_engine, create_probe_engine, session_factory
from herald_api.core.settings import Settings
from herald_shared import queues

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Infrastructure:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    probe_engine: AsyncEngine
    """One connection of /health/ready's own: an overload that took the pool must not
    make the process look unready (or keep the probe waiting)."""
    queues: Mapping[str, Queue]
    """Each base queue name (``herald_shared.queues``) and its connected queue."""

    @property
    def notifier_queue(self) -> Queue:
        return self.queues[queues.NOTIFIER]


@asynccontextmanager
async def open_infrastructure(settings: Settings) -> AsyncIterator[Infrastructure]:
    """Open the engine and connect the queue; disconnect and dispose of them when closing."""
    engine = create_engine(settings)
    probe_engine = create_probe_engine(settings)
    queue = queues.connect_queue(
        settings.redis_target, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    await queue.connect()
    try:
        yield Infrastructure(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            probe_engine=probe_engine,
            queues={queues.NOTIFIER: queue},
        )
    finally:
        try:
            await queue.disconnect()
        except (RedisError, OSError) as exc:
            # Shutting down while Redis is unreachable must still shut down.
            log.warning("queue.disconnect_failed", error=repr(exc))
        await engine.dispose()
        await probe_engine.dispose()

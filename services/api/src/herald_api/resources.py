"""What the API holds open for its lifetime: database pool, queue, hasher, outbox relay,
rate limiter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from redis.exceptions import RedisError
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.ratelimit import RateLimiter
from herald_api.core.db import create_engine, session_factory
from herald_api.core.settings import Settings
from herald_api.outbox.dispatch import Dispatcher, RelayedMarks
from herald_api.outbox.relay import Relay
from herald_shared import queues

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    notifier_queue: Queue
    queues: Mapping[str, Queue]
    """Each base queue name (``herald_shared.queues``) and its connected queue."""
    dispatcher: Dispatcher
    hasher: PasswordHasher
    relay: Relay
    rate_limiter: RateLimiter


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open everything, start the outbox relay; stop the relay first when closing."""
    faults = settings.faults
    if faults.crash_at is not None:
        log.warning(
            "fault.enabled",
            setting="HERALD_API_CRASH_AT",
            point=faults.crash_at,
            effect="this process ends the first time it reaches that point (crash tests only)",
        )
    engine = create_engine(settings)
    sessions = session_factory(engine)
    queue = queues.connect_queue(
        settings.redis_url, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    await queue.connect()
    by_name = {queues.NOTIFIER: queue}
    hasher = PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
    )
    relay = Relay(
        sessions=sessions,
        queues=by_name,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        max_backoff_seconds=settings.outbox_max_backoff_seconds,
        push_timeout_seconds=settings.enqueue_timeout_seconds,
        faults=faults,
    )
    rate_limiter = RateLimiter.from_settings(settings)
    if not settings.rate_limits_enabled:
        log.warning(
            "rate_limit.disabled",
            setting="HERALD_RATE_LIMITS_ENABLED",
            effect="signups, logins, verification resends and password resets are not rate limited",
        )
    relay.start()
    marks = RelayedMarks(sessions, faults=faults)
    marks.start()
    try:
        yield Resources(
            settings=settings,
            engine=engine,
            sessions=sessions,
            notifier_queue=queue,
            queues=by_name,
            dispatcher=Dispatcher(
                by_name,
                marks=marks,
                timeout_seconds=settings.enqueue_timeout_seconds,
                grace_seconds=settings.outbox_fast_path_grace_seconds,
                faults=faults,
            ),
            hasher=hasher,
            relay=relay,
            rate_limiter=rate_limiter,
        )
    finally:
        # Before the pool and the queue close under it.
        await relay.stop()
        await marks.stop()
        hasher.close()
        await rate_limiter.close()
        try:
            await queue.disconnect()
        except (RedisError, OSError) as exc:
            # Shutting down while Redis is unreachable must still shut down.
            log.warning("queue.disconnect_failed", error=repr(exc))
        await engine.dispose()

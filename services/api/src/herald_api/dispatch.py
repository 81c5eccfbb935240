"""Hand queue messages to Redis once the transaction that caused them commits.

The route never enqueues by itself: it asks ``signup`` to register a user, and
``signup`` asks the dispatcher to publish after commit. A transactional outbox
replaces this module's body (stage in the transaction, publish after commit,
relay what failed) without reshaping the route.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog
from redis.exceptions import RedisError
from saq import Queue

from herald_api.metrics import MESSAGES_ENQUEUE_FAILED, MESSAGES_ENQUEUED
from herald_shared.messages import Message
from herald_shared.tasks import enqueue

log = structlog.get_logger(__name__)


class Dispatcher:
    def __init__(self, queue: Queue, *, timeout_seconds: float) -> None:
        self.queue = queue
        self.timeout_seconds = timeout_seconds

    async def publish(self, message: Message, *, user_id: uuid.UUID) -> bool:
        """Enqueue ``message``; on a Redis failure log it with ``user_id`` and return False.

        The caller's transaction has already committed, so a queue outage must
        not turn a created account into an error response.
        """
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await enqueue(self.queue, message)
        except (RedisError, OSError, TimeoutError) as exc:
            MESSAGES_ENQUEUE_FAILED.labels(type(message).__name__).inc()
            log.error(
                "message.enqueue_failed",
                user_id=str(user_id),
                message_id=str(message.message_id),
                message_type=type(message).__name__,
                error=repr(exc),
            )
            return False
        MESSAGES_ENQUEUED.labels(type(message).__name__).inc()
        log.info(
            "message.enqueued",
            user_id=str(user_id),
            message_id=str(message.message_id),
            message_type=type(message).__name__,
            queue=self.queue.name,
        )
        return True

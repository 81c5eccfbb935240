"""Queue names, and how a deployment namespaces them.

A namespace lets several Herald deployments (or test runs) share one Redis:
SAQ keys every structure by queue name (``saq:{queue}:...``), so a prefix on the
name is a prefix on every key.
"""

from __future__ import annotations

from saq import Queue
from saq.queue.redis import RedisQueue

from herald_shared.redis_client import RedisTarget, redis_client

__all__ = ["NOTIFIER", "SCHEDULER", "connect_queue", "queue_name"]

NOTIFIER = "notifier"
"""Account emails, consumed by the notifier."""

SCHEDULER = "scheduler"
"""Cron ticks, consumed by the scheduler (the only owner of CronJobs)."""


def queue_name(name: str, *, namespace: str = "") -> str:
    """The Redis-level name of queue ``name`` inside ``namespace``."""
    return f"{namespace}:{name}" if namespace else name


def connect_queue(redis: RedisTarget | str, name: str, *, namespace: str = "") -> Queue:
    """A SAQ queue for ``name`` inside ``namespace`` on ``redis`` (a target, e.g.
    ``settings.redis_target``, or a URL); not yet connected."""
    return RedisQueue(redis_client(redis), name=queue_name(name, namespace=namespace))

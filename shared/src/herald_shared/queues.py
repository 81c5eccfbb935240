"""Queue names, and how a deployment namespaces them.

A namespace lets several Herald deployments (or test runs) share one Redis:
SAQ keys every structure by queue name (``saq:{queue}:...``), so a prefix on the
name is a prefix on every key.
"""

from __future__ import annotations

from saq import Queue

__all__ = ["NOTIFIER", "SCHEDULER", "connect_queue", "queue_name"]

NOTIFIER = "notifier"
"""Account emails, consumed by the notifier."""

SCHEDULER = "scheduler"
"""Cron ticks, consumed by the scheduler (the only owner of CronJobs)."""


def queue_name(name: str, *, namespace: str = "") -> str:
    """The Redis-level name of queue ``name`` inside ``namespace``."""
    return f"{namespace}:{name}" if namespace else name


def connect_queue(redis_url: str, name: str, *, namespace: str = "") -> Queue:
    """A SAQ queue on Redis for ``name`` inside ``namespace`` (not yet connected)."""
    return Queue.from_url(redis_url, name=queue_name(name, namespace=namespace))

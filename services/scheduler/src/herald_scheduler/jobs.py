"""The scheduler's cron jobs; ``worker.py`` decides when they run (docs/scheduler.md).

The jobs that call the API let its errors (``httpx.HTTPError``) propagate: the
run fails, SAQ logs why, and ``herald_scheduler_cron_runs_total`` counts it.
Each is safe to redo at the next tick, its only retry. Log lines carry counts,
never a user's address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypedDict

import structlog
from saq.types import WorkerInfo

from herald_scheduler.context import SchedulerContext
from herald_scheduler.metrics import record_api_work, record_report

__all__ = [
    "QueueReport",
    "purge_idempotency_keys",
    "purge_outbox",
    "purge_sessions",
    "purge_tokens",
    "purge_unverified_users",
    "reconcile_outbox",
    "remind_unverified_users",
    "report_notifier_queue",
]

log = structlog.get_logger(__name__)


class QueueReport(TypedDict):
    """One report on a queue; also the SAQ result of ``report_notifier_queue``."""

    queue: str
    queued: int
    """Jobs waiting for a worker now (the depth)."""
    active: int
    """Jobs a worker is running."""
    scheduled: int
    """Jobs due later: a future ``scheduled``, or waiting out a retry delay."""
    failed: int
    """Failures counted by the workers alive now, since each started (docs/scheduler.md)."""
    workers: int
    """Workers that reported within SAQ's ``worker_info`` TTL."""
    tick: str | None
    """The cron fire time of this run (ISO 8601, UTC); ``None`` outside a cron run."""


async def report_notifier_queue(ctx: SchedulerContext) -> QueueReport:
    """Log one ``queue.report`` line on the notifier queue, set its gauges, return it."""
    queue = ctx["notifier_queue"]
    info = await queue.info()
    job = ctx.get("job")
    report = QueueReport(
        queue=queue.name,
        queued=info["queued"],
        active=info["active"],
        # SAQ derives this from three separate reads; a job moving between them can
        # push the difference below zero for an instant.
        scheduled=max(info["scheduled"], 0),
        failed=_failed(info["workers"].values()),
        workers=len(info["workers"]),
        tick=_tick(job.scheduled) if job is not None else None,
    )
    log.info("queue.report", **report)
    record_report(
        report["queue"],
        queued=report["queued"],
        active=report["active"],
        scheduled=report["scheduled"],
        failed=report["failed"],
        workers=report["workers"],
    )
    return report


def _failed(workers: Iterable[WorkerInfo]) -> int:
    return sum(stats["failed"] for worker in workers if (stats := worker.get("stats")))


def _tick(scheduled: int) -> str | None:
    return datetime.fromtimestamp(scheduled, UTC).isoformat() if scheduled else None


async def reconcile_outbox(ctx: SchedulerContext) -> dict[str, Any]:
    """Ask the API to check unsettled outbox rows against Redis (settle the delivered
    and dead, push the lost again); log what it did, and return it (``Reconciled``
    as a dict: SAQ stores a job's result as JSON)."""
    older_than = ctx["outbox_reconcile_after_seconds"]
    result = await ctx["internal_api"].reconcile_outbox(older_than_seconds=older_than)
    log.info("outbox.reconciled", older_than_seconds=older_than, **result.model_dump())
    checked = result.delivered + result.skipped + result.dead + result.waiting
    record_api_work("reconcile_outbox", checked + result.repushed)
    return result.model_dump()


async def purge_outbox(ctx: SchedulerContext) -> int:
    """Ask the API to delete outbox rows settled longer ago than their retention; log
    how many."""
    api, older_than = ctx["internal_api"], ctx["outbox_retention_seconds"]
    return await _counted("purge_outbox", api.purge_outbox, older_than, "outbox.purged", "deleted")


async def remind_unverified_users(ctx: SchedulerContext) -> int:
    """Ask the API to send each user unverified for the configured time, and never
    reminded, one reminder with a fresh verification link; log how many."""
    api, older_than = ctx["internal_api"], ctx["verification_reminder_after_seconds"]
    return await _counted(
        "remind_unverified_users",
        api.remind_unverified_users,
        older_than,
        "unverified_users.reminded",
        "reminded",
    )


async def purge_unverified_users(ctx: SchedulerContext) -> int:
    """Ask the API to delete accounts still unverified the configured time after
    signup; log how many."""
    api, older_than = ctx["internal_api"], ctx["unverified_account_seconds"]
    return await _counted(
        "purge_unverified_users",
        api.purge_unverified_users,
        older_than,
        "unverified_users.purged",
        "deleted",
    )


async def purge_tokens(ctx: SchedulerContext) -> int:
    """Ask the API to delete verification tokens used or expired longer ago than
    their retention; log how many."""
    api, older_than = ctx["internal_api"], ctx["token_retention_seconds"]
    return await _counted("purge_tokens", api.purge_tokens, older_than, "tokens.purged", "deleted")


async def purge_idempotency_keys(ctx: SchedulerContext) -> int:
    """Ask the API to delete idempotency keys expired longer ago than their retention;
    log how many."""
    api, older_than = ctx["internal_api"], ctx["idempotency_key_retention_seconds"]
    return await _counted(
        "purge_idempotency_keys",
        api.purge_idempotency_keys,
        older_than,
        "idempotency_keys.purged",
        "deleted",
    )


async def purge_sessions(ctx: SchedulerContext) -> int:
    """Ask the API to delete login sessions that ended (revoked, expired or idle) longer
    ago than their retention; log how many."""
    api, older_than = ctx["internal_api"], ctx["session_retention_seconds"]
    return await _counted(
        "purge_sessions", api.purge_sessions, older_than, "sessions.purged", "deleted"
    )


async def _counted(
    job: str, ask: Callable[..., Awaitable[int]], older_than: int, event: str, count: str
) -> int:
    """Ask the API with ``older_than``; log the count it answers as ``count`` and add it
    to ``job``'s API work."""
    done = await ask(older_than_seconds=older_than)
    log.info(event, **{count: done}, older_than_seconds=older_than)
    record_api_work(job, done)
    return done

"""The scheduler's cron jobs. ``worker.py`` decides when they run."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypedDict

import structlog
from saq import Queue
from saq.types import Context, WorkerInfo

from herald_scheduler.internal_api import InternalApi
from herald_scheduler.metrics import record_api_work, record_report

log = structlog.get_logger(__name__)


class SchedulerContext(Context, total=False):
    """SAQ's job context plus what the scheduler worker's ``startup`` adds."""

    notifier_queue: Queue
    """The notifier's queue, connected for the worker's lifetime."""
    internal_api: InternalApi
    """The API's internal endpoints (only when HERALD_INTERNAL_TOKEN is set)."""
    outbox_retention_seconds: int
    """How long ago an outbox row must have been settled to be purged."""
    outbox_reconcile_after_seconds: int
    """How long an unsettled outbox row's message may go unchecked in Redis."""
    verification_reminder_after_seconds: int
    """How long after signup an unverified user is reminded."""
    unverified_account_seconds: int
    """How long after signup an unverified user is deleted."""
    token_retention_seconds: int
    """How long after use or expiry a verification token is deleted."""


class QueueReport(TypedDict):
    """One report on a queue; also the SAQ result of ``report_notifier_queue``."""

    queue: str
    queued: int
    active: int
    scheduled: int
    failed: int
    workers: int
    tick: str | None


async def report_notifier_queue(ctx: SchedulerContext) -> QueueReport:
    """Log one ``queue.report`` line on the notifier queue, set the notifier queue
    gauges from it, and return its counts.

    - ``queued``: the depth, jobs waiting for a worker now;
    - ``active``: jobs a worker is running;
    - ``scheduled``: jobs due later (future ``scheduled`` or waiting for a retry delay);
    - ``failed``: the sum of ``failed`` in the stats of the notifier workers alive now,
      i.e. failures since those workers started (a restart resets its count, and a
      worker's stats lag by up to its ``worker_info`` timer, 10 s by default);
    - ``workers``: notifier workers that reported in the last ``worker_info`` TTL;
    - ``tick``: the cron fire time this run was scheduled for (ISO 8601, UTC), or
      ``None`` when the job was not enqueued for a fire time.
    """
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
    record_report(report)
    return report


def _failed(workers: Iterable[WorkerInfo]) -> int:
    return sum(stats["failed"] for worker in workers if (stats := worker.get("stats")))


def _tick(scheduled: int) -> str | None:
    return datetime.fromtimestamp(scheduled, UTC).isoformat() if scheduled else None


# The jobs below that call the API let its errors (httpx.HTTPError) propagate: the
# run then fails, SAQ logs the error with its traceback, and the failure is
# counted (herald_scheduler_cron_runs_total{outcome="failed"}). Each is safe to
# redo at the next tick, which is their only retry. Their log lines carry counts,
# never a user's address.


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
    older_than = ctx["outbox_retention_seconds"]
    deleted = await ctx["internal_api"].purge_outbox(older_than_seconds=older_than)
    log.info("outbox.purged", deleted=deleted, older_than_seconds=older_than)
    record_api_work("purge_outbox", deleted)
    return deleted


async def remind_unverified_users(ctx: SchedulerContext) -> int:
    """Ask the API to send each user unverified for the configured time, and never
    reminded, one reminder with a fresh verification link; log how many."""
    older_than = ctx["verification_reminder_after_seconds"]
    reminded = await ctx["internal_api"].remind_unverified_users(older_than_seconds=older_than)
    log.info("unverified_users.reminded", reminded=reminded, older_than_seconds=older_than)
    record_api_work("remind_unverified_users", reminded)
    return reminded


async def purge_unverified_users(ctx: SchedulerContext) -> int:
    """Ask the API to delete accounts still unverified the configured time after
    signup; log how many."""
    older_than = ctx["unverified_account_seconds"]
    deleted = await ctx["internal_api"].purge_unverified_users(older_than_seconds=older_than)
    log.info("unverified_users.purged", deleted=deleted, older_than_seconds=older_than)
    record_api_work("purge_unverified_users", deleted)
    return deleted


async def purge_tokens(ctx: SchedulerContext) -> int:
    """Ask the API to delete verification tokens used or expired longer ago than
    their retention; log how many."""
    older_than = ctx["token_retention_seconds"]
    deleted = await ctx["internal_api"].purge_tokens(older_than_seconds=older_than)
    log.info("tokens.purged", deleted=deleted, older_than_seconds=older_than)
    record_api_work("purge_tokens", deleted)
    return deleted

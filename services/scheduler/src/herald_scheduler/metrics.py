"""The scheduler's Prometheus metrics.

- cron runs by job and outcome, from SAQ's ``after_process`` hook
  (``record_run``);
- the notifier queue as the last ``queue.report`` saw it (``record_report``);
- what the API reported doing for each job that calls it (``record_api_work``).

The worker serves them on ``HERALD_METRICS_HOST:HERALD_METRICS_PORT``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from herald_scheduler.context import SchedulerContext
from herald_shared.metrics import finished_attempt

__all__ = [
    "API_WORK",
    "CRON_RUNS",
    "NOTIFIER_QUEUE_FAILED",
    "NOTIFIER_QUEUE_JOBS",
    "NOTIFIER_QUEUE_WORKERS",
    "expect_api_work",
    "expect_runs",
    "record_api_work",
    "record_report",
    "record_run",
]

CRON_RUNS = Counter(
    "herald_scheduler_cron_runs_total",
    "Cron job runs that ended, by job and outcome: complete, failed, retried (cancelled "
    "by a shutdown and re-queued) or aborted.",
    ["job", "outcome"],
)
NOTIFIER_QUEUE_JOBS = Gauge(
    "herald_scheduler_notifier_queue_jobs",
    "Jobs on the notifier queue at the last queue.report, by state: queued (waiting "
    "for a worker), active (running), scheduled (due later or waiting out a retry delay).",
    ["queue", "state"],
)
NOTIFIER_QUEUE_FAILED = Gauge(
    "herald_scheduler_notifier_queue_failed_jobs",
    "Failed jobs counted by the notifier workers alive at the last queue.report, since "
    "each of them started (a restart resets its share).",
    ["queue"],
)
NOTIFIER_QUEUE_WORKERS = Gauge(
    "herald_scheduler_notifier_queue_workers",
    "Notifier workers alive at the last queue.report.",
    ["queue"],
)
API_WORK = Counter(
    "herald_scheduler_api_work_total",
    "What the API reported doing at the scheduler's request, by job: users reminded "
    "(remind_unverified_users), unverified users deleted (purge_unverified_users), "
    "verification tokens deleted (purge_tokens), outbox rows deleted (purge_outbox), "
    "outbox rows checked in Redis (reconcile_outbox: settled, waited for or pushed again).",
    ["job"],
)


def expect_runs(job: str) -> None:
    """Export 0 complete and 0 failed runs of cron job ``job`` before its first run,
    so rate() and alerts see the series at once."""
    for outcome in ("complete", "failed"):
        CRON_RUNS.labels(job, outcome)


async def record_run(ctx: SchedulerContext) -> None:
    """SAQ ``after_process`` hook: count the cron run that just ended."""
    if (attempt := finished_attempt(ctx)) is not None:
        CRON_RUNS.labels(*attempt).inc()


def record_report(
    queue: str, *, queued: int, active: int, scheduled: int, failed: int, workers: int
) -> None:
    """Set the notifier queue gauges from one ``queue.report``."""
    NOTIFIER_QUEUE_JOBS.labels(queue, "queued").set(queued)
    NOTIFIER_QUEUE_JOBS.labels(queue, "active").set(active)
    NOTIFIER_QUEUE_JOBS.labels(queue, "scheduled").set(scheduled)
    NOTIFIER_QUEUE_FAILED.labels(queue).set(failed)
    NOTIFIER_QUEUE_WORKERS.labels(queue).set(workers)


def expect_api_work(job: str) -> None:
    """Export 0 for cron job ``job``'s API work before its first run."""
    API_WORK.labels(job)


def record_api_work(job: str, count: int) -> None:
    """Count ``count`` things the API did in one run of cron job ``job``."""
    API_WORK.labels(job).inc(count)

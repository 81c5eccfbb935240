"""The scheduler's SAQ worker, the only place in Herald where CronJobs are defined.

Run it with ``herald-scheduler`` or ``saq herald_scheduler.worker.settings``. Any
number of replicas may run: each CronJob is ``unique``, so a fire time runs on one
replica only (docs/scheduler.md: how, and why a per-second cron runs every ~2 s).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, tzinfo
from typing import TypedDict

import structlog
from saq import CronJob, Queue
from saq.types import FunctionsType, LifecycleFunctionsType

from herald_scheduler.context import SchedulerContext, close_context, open_context
from herald_scheduler.jobs import (
    purge_idempotency_keys,
    purge_outbox,
    purge_sessions,
    purge_tokens,
    purge_unverified_users,
    reconcile_outbox,
    remind_unverified_users,
    report_notifier_queue,
)
from herald_scheduler.metrics import expect_api_work, expect_runs, record_run
from herald_scheduler.settings import Settings
from herald_shared import queues
from herald_shared.metrics import serve_metrics

__all__ = [
    "API_JOBS",
    "REPORT_TIMEOUT_SECONDS",
    "WorkerSettings",
    "api_cron_jobs",
    "build_settings",
    "settings",
]

log = structlog.get_logger(__name__)

REPORT_TIMEOUT_SECONDS = 10
"""A report is a handful of Redis reads; past this Redis is in trouble, and the next tick
reports anew."""


API_JOBS = (
    reconcile_outbox,
    purge_outbox,
    remind_unverified_users,
    purge_unverified_users,
    purge_tokens,
    purge_idempotency_keys,
    purge_sessions,
)
"""The jobs that call the API's internal endpoints."""


def api_cron_jobs(settings: Settings) -> list[CronJob[SchedulerContext]]:
    """The CronJobs of ``API_JOBS``, at their configured times.

    None without ``HERALD_INTERNAL_TOKEN``: the API would refuse every call.
    """
    if settings.internal_token is None:
        return []
    crons = {
        reconcile_outbox: settings.outbox_reconcile_cron,
        purge_outbox: settings.outbox_purge_cron,
        remind_unverified_users: settings.verification_reminder_cron,
        purge_unverified_users: settings.unverified_purge_cron,
        purge_tokens: settings.token_purge_cron,
        purge_idempotency_keys: settings.idempotency_key_purge_cron,
        purge_sessions: settings.session_purge_cron,
    }
    return [
        CronJob(
            function,
            cron=crons[function],
            unique=True,
            timeout=int(settings.api_timeout_seconds) + 5,
            # A failed run (API down) is simply redone at the next tick: each of
            # these is idempotent, and the API never reminds a user twice.
            retries=1,
        )
        for function in API_JOBS
    ]


class WorkerSettings(TypedDict):
    """Keyword arguments of ``saq.Worker`` (also what the ``saq`` CLI imports)."""

    queue: Queue
    functions: FunctionsType[SchedulerContext]
    concurrency: int
    cron_jobs: Collection[CronJob[SchedulerContext]]
    cron_tz: tzinfo
    startup: LifecycleFunctionsType[SchedulerContext]
    shutdown: LifecycleFunctionsType[SchedulerContext]
    after_process: LifecycleFunctionsType[SchedulerContext]
    shutdown_grace_period_s: int


def build_settings(settings: Settings) -> WorkerSettings:
    """The SAQ worker settings of the scheduler configured by ``settings``.

    The worker consumes its own queue, ``scheduler`` (namespaced), which carries
    only cron runs. Its ``startup`` serves the metrics (once per process) and opens
    the job context (``herald_scheduler.context``); ``shutdown`` closes it. Every
    finished run is counted by ``after_process``.
    """

    async def startup(ctx: SchedulerContext) -> None:
        serve_metrics(settings.metrics_host, settings.metrics_port)
        await open_context(ctx, settings)
        if settings.internal_token is None:
            log.warning(
                "scheduler.api_jobs_disabled",
                reason="HERALD_INTERNAL_TOKEN is not set",
                jobs=[function.__qualname__ for function in API_JOBS],
            )

    cron_jobs = [
        CronJob(
            report_notifier_queue,
            cron=settings.queue_report_cron,
            unique=True,
            timeout=REPORT_TIMEOUT_SECONDS,
            # One attempt: a failed report is stale by the next tick, which reports anew.
            retries=1,
        )
    ]
    cron_jobs.extend(api_cron_jobs(settings))
    for cron_job in cron_jobs:
        expect_runs(cron_job.function.__qualname__)
        if cron_job.function in API_JOBS:
            expect_api_work(cron_job.function.__qualname__)

    return WorkerSettings(
        queue=queues.connect_queue(
            settings.redis_target, queues.SCHEDULER, namespace=settings.queue_namespace
        ),
        functions=[],
        # Each CronJob has at most one run in flight (its unique key), so one slot
        # per CronJob is enough, and a slow API call never holds up another job.
        concurrency=len(cron_jobs),
        cron_jobs=cron_jobs,
        cron_tz=UTC,
        startup=startup,
        shutdown=close_context,
        after_process=record_run,
        shutdown_grace_period_s=settings.scheduler_shutdown_grace_seconds,
    )


settings = build_settings(Settings())
"""For ``saq herald_scheduler.worker.settings``: built from the environment at import."""

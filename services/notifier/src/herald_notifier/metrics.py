"""The notifier's Prometheus metrics, and what keeps them current.

- job attempts, from SAQ's ``after_process`` hook (``record_attempt``);
- SMTP deliveries, timed around the send (``measure_send``);
- emails skipped rather than sent, by reason: a link that expired before
  an attempt could send it (``herald_notifier.handlers``);
- what the delivery records decided: duplicates suppressed, possible
  duplicates sent, claim clashes, and the time the ``sent`` mark took (the
  RFC 1047 window, see ``herald_notifier.delivery``);
- dead letters, by task and reason class (``herald_notifier.dead_letters``);
- the notifier queue's depth, refreshed by a task the worker's startup runs
  (``track_queue_depth``), so a scrape never waits on Redis.

The worker serves them on ``HERALD_METRICS_HOST:HERALD_METRICS_PORT``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram
from saq import Queue

from herald_shared import queues
from herald_shared.metrics import finished_attempt
from herald_shared.tasks import TASKS

QUEUE_DEPTH_INTERVAL_SECONDS = 5.0
"""How often the queue depth gauges are refreshed from Redis."""

log = structlog.get_logger(__name__)

JOBS_PROCESSED = Counter(
    "herald_notifier_jobs_processed_total",
    "Job attempts the notifier ran to an end, whatever the outcome, by task.",
    ["task"],
)
JOBS_RETRIED = Counter(
    "herald_notifier_jobs_retried_total",
    "Job attempts that raised with attempts left (or were cancelled by a shutdown) "
    "and were re-queued, by task.",
    ["task"],
)
JOBS_FAILED = Counter(
    "herald_notifier_jobs_failed_total",
    "Job attempts that raised with no retry left: the job failed for good, by task.",
    ["task"],
)
EMAILS_SENT = Counter("herald_notifier_emails_sent_total", "Emails the SMTP relay accepted.")
EMAIL_SEND_SECONDS = Histogram(
    "herald_notifier_email_send_duration_seconds",
    "Time one SMTP delivery took (connect to the reply to DATA), by outcome: sent or error.",
    ["outcome"],
    # Up to the 60 s job timeout: a relay that hangs until HERALD_SMTP_TIMEOUT shows.
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
)
EMAILS_SKIPPED = Counter(
    "herald_notifier_emails_skipped_total",
    "Jobs completed without sending their email, by reason: link_expired (its "
    "verification or reset link had expired when the attempt started), recorded_skipped "
    "(its delivery record says skipped: its account was deleted, or another attempt found "
    "its link expired).",
    ["reason"],
)
SKIP_REASONS = ("link_expired", "recorded_skipped")
DUPLICATES_SUPPRESSED = Counter(
    "herald_notifier_duplicates_suppressed_total",
    "Jobs whose message was already sent: acknowledged without sending again.",
)
POSSIBLE_DUPLICATES = Counter(
    "herald_notifier_possible_duplicates_total",
    "Sends of a message a previous attempt may already have delivered, by cause: crash "
    "(its worker died holding the delivery claim) or unconfirmed (DATA went out and no "
    "reply came: a timeout, a dropped connection, a cancellation; a 4xx or 5xx reply is "
    "a refusal, not counted).",
    ["cause"],
)
CLAIM_CONFLICTS = Counter(
    "herald_notifier_delivery_claim_conflicts_total",
    "Attempts that found another live claim on their message and were retried later.",
)
DELIVERY_MARK_SECONDS = Histogram(
    "herald_notifier_delivery_mark_seconds",
    "Time from the relay's 250 to the sent record acknowledged by Redis: the window in "
    "which a crash sends the message twice.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DELIVERY_MARKS_FAILED = Counter(
    "herald_notifier_delivery_marks_failed_total",
    "Emails the relay accepted whose sent record could not be written: a redelivery of "
    "such a message sends it again.",
)
DEAD_LETTERS = Counter(
    "herald_notifier_dead_letters_total",
    "Jobs dead-lettered, by task and reason: malformed, rejected (5xx), unrenderable, "
    "retries_exhausted, stuck (swept with no attempt left) or failed (other).",
    ["task", "reason"],
)
DEAD_LETTER_REASONS = (
    "malformed",
    "rejected",
    "unrenderable",
    "retries_exhausted",
    "stuck",
    "failed",
)
JOBS_SWEPT = Counter(
    "herald_notifier_jobs_swept_total",
    "Stuck jobs (their worker crashed or stalled) the sweeper handed on, by outcome: "
    "requeued (a retry) or dead_lettered (no attempt left).",
    ["outcome"],
)
STALE_ATTEMPT_WRITES = Counter(
    "herald_notifier_stale_attempt_writes_total",
    "Finishes or retries refused because the attempt's job had moved on (the sweeper "
    "re-queued it, another attempt runs it), by op: finish or retry. The job keeps its "
    "state; the delivery record keeps the email from going out twice.",
    ["op"],
)
QUEUE_JOBS = Gauge(
    "herald_notifier_queue_jobs",
    "Jobs on the notifier queue by state: queued (waiting for a worker), active "
    "(running) and scheduled (due later, or waiting out a retry delay).",
    ["queue", "state"],
)

for _task in TASKS.values():
    if _task.queue == queues.NOTIFIER:
        # Export 0 before the first job, so rate() and alerts see the series at once.
        for _counter in (JOBS_PROCESSED, JOBS_RETRIED, JOBS_FAILED):
            _counter.labels(_task.name)
        for _reason in DEAD_LETTER_REASONS:
            DEAD_LETTERS.labels(_task.name, _reason)
for _outcome in ("sent", "error"):
    EMAIL_SEND_SECONDS.labels(_outcome)
for _cause in ("crash", "unconfirmed"):
    POSSIBLE_DUPLICATES.labels(_cause)
for _swept in ("requeued", "dead_lettered"):
    JOBS_SWEPT.labels(_swept)
for _op in ("finish", "retry"):
    STALE_ATTEMPT_WRITES.labels(_op)
for _reason in SKIP_REASONS:
    EMAILS_SKIPPED.labels(_reason)


async def record_attempt(ctx: dict[str, Any]) -> None:
    """SAQ ``after_process`` hook: count the attempt that just ended."""
    if (attempt := finished_attempt(ctx)) is None:
        return
    task, outcome = attempt
    JOBS_PROCESSED.labels(task).inc()
    if outcome == "retried":
        JOBS_RETRIED.labels(task).inc()
    elif outcome == "failed":
        JOBS_FAILED.labels(task).inc()


@contextmanager
def measure_send() -> Iterator[None]:
    """Time the SMTP delivery in the block; count it as sent if the block returns."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "sent"
    finally:
        EMAIL_SEND_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        if outcome == "sent":
            EMAILS_SENT.inc()


async def update_queue_depth(queue: Queue) -> None:
    """Set the depth gauges of ``queue`` from Redis."""
    queued = await queue.count("queued")
    active = await queue.count("active")
    incomplete = await queue.count("incomplete")
    QUEUE_JOBS.labels(queue.name, "queued").set(queued)
    QUEUE_JOBS.labels(queue.name, "active").set(active)
    # Three separate reads: a job moving between them can push this below zero.
    QUEUE_JOBS.labels(queue.name, "scheduled").set(max(incomplete - queued - active, 0))


async def track_queue_depth(queue: Queue, *, every: float = QUEUE_DEPTH_INTERVAL_SECONDS) -> None:
    """Refresh the depth gauges of ``queue`` now and every ``every`` seconds, until cancelled.

    A failed refresh keeps the last values; it is logged once per outage.
    """
    failing = False
    while True:
        try:
            await update_queue_depth(queue)
        except Exception as exc:
            # Whatever went wrong, the worker must keep sending mail.
            if not failing:
                log.warning("metrics.queue_depth_failed", queue=queue.name, error=repr(exc))
            failing = True
        else:
            if failing:
                log.info("metrics.queue_depth_recovered", queue=queue.name)
            failing = False
        await asyncio.sleep(every)

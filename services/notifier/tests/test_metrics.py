"""The notifier's metrics: attempts by outcome, SMTP sends, and the queue's depth.

The default registry lives as long as the test process, so each test compares
values before and after what it does; the HTTP endpoint is scraped from a
``python -m herald_notifier`` process of its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

from prometheus_client import REGISTRY
from saq import Job, Queue, Status
from saq.job import TERMINAL_STATUSES

from herald_notifier.metrics import update_queue_depth
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import SEND_WELCOME_EMAIL, enqueue
from herald_testing.jobs import running_worker
from herald_testing.maildev import MailDev, MailDevClient
from herald_testing.messages import LINK_SECRET, welcome_email
from herald_testing.ports import free_port
from herald_testing.processes import scrape_metrics
from herald_testing.waiting import eventually

TASK = SEND_WELCOME_EMAIL.name

SettingsFor = Callable[..., Settings]


def value(name: str, **labels: str) -> float:
    """The current value of one sample of the default registry (0 if absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    return {
        "processed": value("herald_notifier_jobs_processed_total", task=TASK),
        "retried": value("herald_notifier_jobs_retried_total", task=TASK),
        "failed": value("herald_notifier_jobs_failed_total", task=TASK),
        "sent": value("herald_notifier_emails_sent_total"),
        "sends_ok": value("herald_notifier_email_send_duration_seconds_count", outcome="sent"),
        "sends_ok_seconds": value(
            "herald_notifier_email_send_duration_seconds_sum", outcome="sent"
        ),
        "sends_error": value("herald_notifier_email_send_duration_seconds_count", outcome="error"),
    }


def change(before: dict[str, float]) -> dict[str, float]:
    after = snapshot()
    return {key: after[key] - before[key] for key in before if after[key] != before[key]}


async def finished(queue: Queue, key: str) -> Job:
    for _ in range(200):
        job = await queue.job(key)
        if job is not None and job.status in TERMINAL_STATUSES:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {key} did not finish")


async def test_a_sent_email_is_counted_and_timed(
    settings_for: SettingsFor, maildev: MailDev, mailbox: MailDevClient, notifier_queue: Queue
) -> None:
    before = snapshot()
    settings = settings_for(smtp_host=maildev.smtp_host, smtp_port=maildev.smtp_port)

    async with running_worker(build_settings(settings)):
        job = await enqueue(notifier_queue, welcome_email(email="ada@example.com"))
        assert job is not None
        await mailbox.wait_for_email("ada@example.com")
        assert (await finished(notifier_queue, job.key)).status == Status.COMPLETE
        await eventually(lambda: "processed" in change(before), "counted")

    delta = change(before)
    assert delta.pop("sends_ok_seconds") > 0
    assert delta == {"processed": 1, "sent": 1, "sends_ok": 1}


async def test_a_failing_job_counts_a_retry_then_a_failure(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    before = snapshot()
    job = SEND_WELCOME_EMAIL.job(welcome_email(email="alan@example.com"))
    job.retries = 2
    job.retry_delay = 0.0

    async with running_worker(build_settings(settings_for(smtp_port=free_port()))):
        await notifier_queue.enqueue(job)
        done = await finished(notifier_queue, job.key)
        await eventually(lambda: change(before).get("processed") == 2, "counted")

    assert (done.status, done.attempts) == (Status.FAILED, 2)
    assert change(before) == {"processed": 2, "retried": 1, "failed": 1, "sends_error": 2}


def depth(queue: Queue, state: str) -> float | None:
    return REGISTRY.get_sample_value(
        "herald_notifier_queue_jobs", {"queue": queue.name, "state": state}
    )


async def test_queue_depth_gauges_count_queued_active_and_scheduled_jobs(
    notifier_queue: Queue,
) -> None:
    for address in ("a@example.com", "b@example.com"):
        await enqueue(notifier_queue, welcome_email(email=address))
    later = SEND_WELCOME_EMAIL.job(welcome_email(email="c@example.com"))
    await notifier_queue.enqueue(later, scheduled=int(time.time()) + 3600)
    running = SEND_WELCOME_EMAIL.job(welcome_email(email="d@example.com"))
    await notifier_queue.enqueue(running)
    # Dequeue the oldest one, as a worker starting it would: it becomes active.
    assert await notifier_queue.dequeue() is not None

    await update_queue_depth(notifier_queue)

    states = ("queued", "active", "scheduled")
    assert {state: depth(notifier_queue, state) for state in states} == {
        "queued": 2,
        "active": 1,
        "scheduled": 1,
    }


async def test_the_worker_refreshes_the_queue_depth_while_it_runs(
    settings_for: SettingsFor, notifier_queue: Queue
) -> None:
    later = SEND_WELCOME_EMAIL.job(welcome_email(email="e@example.com"))
    await notifier_queue.enqueue(later, scheduled=int(time.time()) + 3600)

    async with running_worker(build_settings(settings_for(smtp_port=free_port()))):
        await eventually(lambda: depth(notifier_queue, "scheduled") == 1, "refreshed")

    assert depth(notifier_queue, "queued") == 0
    assert depth(notifier_queue, "active") == 0


async def test_the_notifier_process_serves_its_metrics_over_http(
    redis_url: str, queue_namespace: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_LOG_FORMAT": "json",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "0",
        "HERALD_METRICS_HOST": "127.0.0.1",
        "HERALD_METRICS_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_notifier",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        text = await scrape_metrics(
            f"http://127.0.0.1:{port}/metrics",
            process,
            lambda text: "herald_notifier_queue_jobs{" in text,
        )
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert returncode == 0
    assert f'herald_notifier_jobs_processed_total{{task="{TASK}"}} 0.0' in text
    assert f'herald_notifier_jobs_failed_total{{task="{TASK}"}} 0.0' in text
    assert "herald_notifier_emails_sent_total 0.0" in text
    assert f'herald_notifier_queue_jobs{{queue="{queue_namespace}:notifier",state="queued"}}' in (
        text
    )

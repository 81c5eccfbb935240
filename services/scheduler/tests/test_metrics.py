"""The scheduler's metrics: cron runs by outcome, and the notifier queue as reported.

The default registry lives as long as the test process, so each test compares
values before and after what it does; the HTTP endpoint is scraped from a
``python -m herald_scheduler`` process of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY
from saq import Job, Queue, Status, Worker

from herald_scheduler.context import SchedulerContext
from herald_scheduler.jobs import report_notifier_queue
from herald_scheduler.metrics import record_run
from herald_scheduler.settings import Settings
from herald_scheduler.worker import build_settings
from herald_shared import tasks
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port
from herald_testing.processes import scrape_metrics

JOB = "report_notifier_queue"


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def runs(outcome: str) -> float:
    return value("herald_scheduler_cron_runs_total", job=JOB, outcome=outcome) or 0.0


async def test_each_report_sets_the_notifier_queue_gauges(notifier_queue: Queue) -> None:
    for _ in range(2):
        await tasks.enqueue(
            notifier_queue,
            welcome_email(user_id=uuid.uuid4(), email="ada@example.com", display_name="Ada"),
        )
    ctx = cast(SchedulerContext, {"notifier_queue": notifier_queue})

    report = await report_notifier_queue(ctx)

    name = notifier_queue.name
    gauges = {
        state: value("herald_scheduler_notifier_queue_jobs", queue=name, state=state)
        for state in ("queued", "active", "scheduled")
    }
    assert gauges == {"queued": 2, "active": 0, "scheduled": 0}
    assert value("herald_scheduler_notifier_queue_failed_jobs", queue=name) == report["failed"]
    assert value("herald_scheduler_notifier_queue_workers", queue=name) == report["workers"]


async def test_a_worker_counts_its_completed_cron_runs(
    redis_url: str, queue_namespace: str
) -> None:
    completed = runs("complete")
    settings = Settings(
        redis_url=redis_url,
        queue_namespace=queue_namespace,
        queue_report_cron="* * * * * *",
        scheduler_shutdown_grace_seconds=0,
        metrics_port=0,
    )
    worker: Worker[Any] = Worker(**build_settings(settings))
    await worker.queue.connect()
    task = asyncio.create_task(worker.start())
    try:
        deadline = time.monotonic() + 15
        while runs("complete") == completed:
            assert time.monotonic() < deadline, "no cron run counted within 15 s"
            await asyncio.sleep(0.1)
    finally:
        await worker.stop()
        await task
        await worker.queue.disconnect()

    # Failures are exported (as 0) before the first one happens.
    assert value("herald_scheduler_cron_runs_total", job=JOB, outcome="failed") is not None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(Status.FAILED, "failed"), (Status.QUEUED, "retried"), (Status.ABORTED, "aborted")],
)
async def test_a_run_is_counted_by_how_it_ended(
    redis_url: str, queue_namespace: str, status: Status, outcome: str
) -> None:
    worker: Worker[Any] = Worker(
        **build_settings(Settings(redis_url=redis_url, queue_namespace=queue_namespace))
    )
    before = runs(outcome)
    ctx = cast(SchedulerContext, {"worker": worker, "job": Job(JOB, status=status)})

    await record_run(ctx)

    assert runs(outcome) == before + 1


async def test_a_job_the_worker_lacks_is_counted_as_other(
    redis_url: str, queue_namespace: str
) -> None:
    worker: Worker[Any] = Worker(
        **build_settings(Settings(redis_url=redis_url, queue_namespace=queue_namespace))
    )
    labels = {"job": "other", "outcome": "failed"}
    before = REGISTRY.get_sample_value("herald_scheduler_cron_runs_total", labels) or 0.0
    ctx = cast(
        SchedulerContext, {"worker": worker, "job": Job("made_up_name", status=Status.FAILED)}
    )

    await record_run(ctx)

    assert REGISTRY.get_sample_value("herald_scheduler_cron_runs_total", labels) == before + 1


async def test_the_scheduler_process_serves_its_metrics_over_http(
    redis_url: str, queue_namespace: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_QUEUE_REPORT_CRON": "* * * * * *",
        "HERALD_LOG_FORMAT": "json",
        "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "0",
        "HERALD_METRICS_HOST": "127.0.0.1",
        "HERALD_METRICS_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_scheduler",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    completed = re.compile(
        rf'^herald_scheduler_cron_runs_total{{job="{JOB}",outcome="complete"}} ([0-9.e+]+)$',
        re.MULTILINE,
    )
    try:
        text = await scrape_metrics(
            f"http://127.0.0.1:{port}/metrics",
            process,
            lambda text: bool((found := completed.search(text)) and float(found[1]) >= 1),
        )
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert returncode == 0
    queue = f"{queue_namespace}:notifier"
    assert f'herald_scheduler_notifier_queue_jobs{{queue="{queue}",state="queued"}} 0.0' in text
    assert f'herald_scheduler_notifier_queue_failed_jobs{{queue="{queue}"}} 0.0' in text

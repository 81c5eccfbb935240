"""The notifier queue report, run by real scheduler workers against real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, cast

import pytest
from saq import Job, Queue, Worker
from structlog.testing import capture_logs

from herald_scheduler.context import SchedulerContext
from herald_scheduler.jobs import report_notifier_queue
from herald_scheduler.settings import Settings
from herald_scheduler.worker import build_settings
from herald_shared import tasks
from herald_shared.messages import WelcomeEmail
from herald_testing.messages import welcome_email
from herald_testing.waiting import eventually

EVERY_SECOND = "* * * * * *"


class Workers:
    """Real ``saq.Worker``s running as asyncio tasks of the test's event loop."""

    def __init__(self) -> None:
        self._running: list[tuple[Worker[Any], asyncio.Task[None]]] = []

    async def start(self, settings: Any) -> Worker[Any]:
        """Connect the worker's queue and start it (its ``startup`` runs first)."""
        worker: Worker[Any] = Worker(**settings)
        await worker.queue.connect()
        self._running.append((worker, asyncio.create_task(worker.start())))
        return worker

    async def stop_all(self) -> None:
        """Stop every worker (running its ``shutdown``) and disconnect its queue."""
        running, self._running = self._running, []
        for worker, task in running:
            await worker.stop()
            await task
            await worker.queue.disconnect()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    started = Workers()
    yield started
    await started.stop_all()


def scheduler_settings(redis_url: str, namespace: str, cron: str = EVERY_SECOND) -> Settings:
    return Settings(
        redis_url=redis_url,
        queue_namespace=namespace,
        queue_report_cron=cron,
        scheduler_shutdown_grace_seconds=0,
        metrics_port=0,
    )


def welcome() -> WelcomeEmail:
    return welcome_email(user_id=uuid.uuid4(), email="ada@example.com", display_name="Ada Lovelace")


def reports(logs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "queue.report"]


async def test_replicas_report_once_per_tick(
    redis_url: str, queue_namespace: str, workers: Workers
) -> None:
    settings = scheduler_settings(redis_url, queue_namespace)
    with capture_logs() as logs:
        first = await workers.start(build_settings(settings))
        # Offset the replicas' 1 s schedule polls, as separate processes would be: in
        # lockstep, a per-second cron only fires every other second (see worker.py).
        await asyncio.sleep(0.5)
        await workers.start(build_settings(settings))

        async def both_replicas_alive() -> bool:
            return len((await first.queue.info())["workers"]) == 2

        async def four_ticks_reported() -> bool:
            return len({entry["tick"] for entry in reports(logs)}) >= 4

        await eventually(both_replicas_alive, within=15.0)
        await eventually(four_ticks_reported, within=15.0)
        await workers.stop_all()

    ticks = [entry["tick"] for entry in reports(logs)]
    duplicates = sorted({tick for tick in ticks if ticks.count(tick) > 1})
    assert duplicates == [], f"ticks reported more than once: {duplicates}"
    assert None not in ticks
    assert reports(logs)[0] == {
        "event": "queue.report",
        "log_level": "info",
        "queue": f"{queue_namespace}:notifier",
        "queued": 0,
        "active": 0,
        "scheduled": 0,
        "failed": 0,
        "workers": 0,
        "tick": ticks[0],
    }


async def test_report_counts_queued_and_scheduled_jobs(notifier_queue: Queue) -> None:
    for _ in range(3):
        assert await tasks.enqueue(notifier_queue, welcome()) is not None
    later = int(time.time()) + 3600
    assert await notifier_queue.enqueue(tasks.SEND_WELCOME_EMAIL.job(welcome()), scheduled=later)
    tick = 1_800_000_000
    ctx = cast(
        SchedulerContext, {"notifier_queue": notifier_queue, "job": Job("x", scheduled=tick)}
    )

    with capture_logs() as logs:
        report = await report_notifier_queue(ctx)

    assert report == {
        "queue": notifier_queue.name,
        "queued": 3,
        "active": 0,
        "scheduled": 1,
        "failed": 0,
        "workers": 0,
        "tick": "2027-01-15T08:00:00+00:00",
    }
    assert reports(logs) == [{"event": "queue.report", "log_level": "info", **report}]


async def test_report_counts_active_jobs_and_failures_of_live_workers(
    notifier_queue: Queue, workers: Workers
) -> None:
    release = asyncio.Event()

    async def hold(_ctx: dict[str, Any]) -> None:
        await release.wait()

    async def explode(_ctx: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    try:
        await workers.start(
            {
                "queue": notifier_queue,
                "functions": [("hold", hold), ("explode", explode)],
                "concurrency": 3,
                "timers": {"worker_info": 1},
            }
        )
        await notifier_queue.enqueue("hold", timeout=0)
        for _ in range(2):
            await notifier_queue.enqueue("explode", retries=1)
        ctx = cast(SchedulerContext, {"notifier_queue": notifier_queue})
        expected = {
            "queue": notifier_queue.name,
            "queued": 0,
            "active": 1,
            "scheduled": 0,
            "failed": 2,
            "workers": 1,
            "tick": None,
        }

        async def reported() -> bool:
            return dict(await report_notifier_queue(ctx)) == expected

        await eventually(reported, within=15.0)
    finally:
        release.set()

"""``herald-scheduler``: run the scheduler's SAQ worker until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio

from saq import Worker

from herald_scheduler.jobs import SchedulerContext
from herald_scheduler.settings import Settings
from herald_scheduler.worker import WorkerSettings, build_settings
from herald_shared.logs import configure_logging


async def run(worker_settings: WorkerSettings) -> None:
    """Run a worker with ``worker_settings`` until it is stopped.

    ``Worker.start`` handles SIGINT and SIGTERM itself: it stops taking jobs,
    gives a running one the shutdown grace period, then runs ``shutdown``.
    """
    worker: Worker[SchedulerContext] = Worker(**worker_settings)
    await worker.queue.connect()
    try:
        await worker.start()
    finally:
        await worker.queue.disconnect()


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="herald-scheduler",
        description="Run the scheduler's SAQ worker (cron jobs) until SIGINT or SIGTERM.",
    ).parse_args(argv)
    settings = Settings()
    configure_logging(service="scheduler", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(build_settings(settings)))


if __name__ == "__main__":
    main()

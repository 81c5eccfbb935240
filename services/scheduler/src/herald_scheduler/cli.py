"""``herald-scheduler``: run the scheduler's SAQ worker, or serve the queue monitor.

herald-scheduler            # the worker (cron jobs) until SIGINT or SIGTERM
herald-scheduler worker     # the same
herald-scheduler monitor    # SAQ's web monitor of the queues, behind basic auth
"""

from __future__ import annotations

import argparse
import asyncio

from saq import Worker

from herald_scheduler.context import SchedulerContext
from herald_scheduler.monitor import MonitorConfigError, serve
from herald_scheduler.settings import Settings
from herald_scheduler.worker import WorkerSettings, build_settings
from herald_shared.logs import configure_logging

__all__ = ["main", "run"]


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
    """Parse ``argv``, configure logging, then run the worker or serve the monitor."""
    parser = argparse.ArgumentParser(
        prog="herald-scheduler",
        description="Run the scheduler's SAQ worker (the default), or serve the queue monitor.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{worker,monitor}")
    commands.add_parser(
        "worker", help="run the SAQ worker (cron jobs) until SIGINT or SIGTERM (the default)"
    )
    commands.add_parser(
        "monitor",
        help="serve SAQ's web monitor of the notifier and scheduler queues on "
        "HERALD_MONITOR_HOST:HERALD_MONITOR_PORT, behind basic auth",
    )
    args = parser.parse_args(argv)

    settings = Settings()
    configure_logging(service="scheduler", level=settings.log_level, fmt=settings.log_format)
    if args.command == "monitor":
        try:
            serve(settings)
        except MonitorConfigError as exc:
            parser.exit(2, f"herald-scheduler monitor: {exc}\n")
        return
    asyncio.run(run(build_settings(settings)))


if __name__ == "__main__":
    main()

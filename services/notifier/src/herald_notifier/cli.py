"""``herald-notifier``: run the notifier worker until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from saq import Worker

from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.logs import configure_logging

log = structlog.get_logger(__name__)


def main() -> None:
    """Configure logging from the environment and run the worker."""
    settings = Settings()
    configure_logging(service="notifier", level=settings.log_level, fmt=settings.log_format)
    asyncio.run(run(build_settings(settings)))


async def run(worker_settings: dict[str, Any]) -> None:
    """Run a worker until SIGINT/SIGTERM, then let in-flight jobs finish within
    the grace period."""
    worker: Worker[Any] = Worker(**worker_settings)
    await worker.queue.connect()
    try:
        log.info("notifier.started", queue=worker.queue.name, concurrency=worker.concurrency)
        # Worker.start installs its own SIGINT/SIGTERM handlers and stops gracefully.
        await worker.start()
    finally:
        await worker.queue.disconnect()
        log.info("notifier.stopped")

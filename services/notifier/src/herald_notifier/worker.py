"""The SAQ worker settings of the notifier.

``saq herald_notifier.worker.settings`` runs it with SAQ's own CLI;
``herald-notifier`` (``herald_notifier.cli``) runs it with Herald's logging.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from herald_notifier.handlers import RESOURCES, Resources, send_welcome_email
from herald_notifier.mailer import Mailer
from herald_notifier.metrics import record_attempt, track_queue_depth
from herald_notifier.render import Renderer
from herald_notifier.settings import Settings
from herald_shared import queues
from herald_shared.metrics import serve_metrics
from herald_shared.tasks import SEND_WELCOME_EMAIL, consumer

QUEUE_DEPTH = "notifier_queue_depth"
"""The ctx key of the task refreshing the queue depth gauges."""


def build_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``saq.Worker`` for a notifier configured by ``settings``.

    Creates the (unconnected) queue and nothing else; templates, the mailer,
    the metrics server and the queue depth task are made by the worker's
    startup, and the task is cancelled by its shutdown.
    """
    queue = queues.connect_queue(
        settings.redis_url, queues.NOTIFIER, namespace=settings.queue_namespace
    )

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[RESOURCES] = Resources(renderer=Renderer(settings.sender), mailer=Mailer(settings))
        serve_metrics(settings.metrics_host, settings.metrics_port)
        ctx[QUEUE_DEPTH] = asyncio.create_task(track_queue_depth(queue))

    async def shutdown(ctx: dict[str, Any]) -> None:
        task: asyncio.Task[None] | None = ctx.pop(QUEUE_DEPTH, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return {
        "queue": queue,
        "functions": [consumer(SEND_WELCOME_EMAIL, send_welcome_email)],
        "concurrency": settings.notifier_concurrency,
        "startup": startup,
        "shutdown": shutdown,
        "after_process": record_attempt,
        "shutdown_grace_period_s": settings.notifier_shutdown_grace_seconds,
    }


settings = build_settings(Settings())

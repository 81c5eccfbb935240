"""The SAQ worker settings of the notifier: its queue, one consumer per row of
the catalogue, and the resources its startup makes.

``saq herald_notifier.worker.settings`` runs it with SAQ's own CLI;
``herald-notifier`` (``herald_notifier.cli``) runs it with Herald's logging.
A SIGKILLed worker's jobs run again elsewhere within about 17 s + send
(heartbeat + sweep + backoff + schedule; docs/notifier.md, "Crash recovery
bound"; checked by ``test_exactly_once``).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from herald_notifier.catalogue import CATALOGUE
from herald_notifier.consumer import consumer
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.faults import CrashingDeliveryRecords, Faults
from herald_notifier.handlers import RESOURCES, Resources, send_email
from herald_notifier.mailer import Mailer
from herald_notifier.metrics import record_attempt, track_queue_depth
from herald_notifier.queue import NotifierQueue
from herald_notifier.render import Renderer
from herald_notifier.settings import Settings
from herald_shared import queues
from herald_shared.metrics import serve_metrics

QUEUE_DEPTH = "notifier_queue_depth"
"""The ctx key of the task refreshing the queue depth gauges."""


def connect_queue(settings: Settings) -> NotifierQueue:
    """The notifier's queue in the configured namespace (not yet connected)."""
    return NotifierQueue.connect_url(
        settings.redis_target,
        name=queues.queue_name(queues.NOTIFIER, namespace=settings.queue_namespace),
        faults=Faults(settings.notifier_crash_at),
        finished_job_seconds=settings.notifier_finished_job_seconds,
    )


def delivery_records(queue: NotifierQueue, settings: Settings) -> DeliveryRecords:
    """The delivery records of ``queue``, on its Redis; under a crash test
    (``HERALD_NOTIFIER_CRASH_AT``), ones that reach its delivery crash points."""
    ttl = timedelta(days=settings.notifier_delivery_record_days)
    if queue.faults.crash_at is not None:
        return CrashingDeliveryRecords(
            queue.redis, queue_name=queue.name, record_ttl=ttl, faults=queue.faults
        )
    return DeliveryRecords(queue.redis, queue_name=queue.name, record_ttl=ttl)


def build_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``saq.Worker`` for a notifier configured by ``settings``.

    Creates the (unconnected) queue and nothing else; templates, the mailer,
    the delivery records, the metrics server and the queue depth task are
    made by the worker's startup; its shutdown cancels the task and closes the
    mailer's kept SMTP connections.
    """
    queue = connect_queue(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        # SAQ sets the worker's event on SIGTERM (and on stop()); from then on
        # its idle slots must not start a send the grace period would cut.
        queue.stop_taking_jobs_on(ctx["worker"].event)
        ctx[RESOURCES] = Resources(
            renderer=Renderer(
                settings.sender,
                link_secret=settings.link_secret,
                verify_url=str(settings.verify_url),
                reset_url=str(settings.reset_url),
                brand=settings.brand,
            ),
            mailer=Mailer(settings),
            deliveries=delivery_records(queue, settings),
        )
        serve_metrics(settings.metrics_host, settings.metrics_port)
        ctx[QUEUE_DEPTH] = asyncio.create_task(track_queue_depth(queue))

    async def shutdown(ctx: dict[str, Any]) -> None:
        task: asyncio.Task[None] | None = ctx.pop(QUEUE_DEPTH, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        resources: Resources | None = ctx.get(RESOURCES)
        if resources is not None:
            # After the jobs (SAQ waits for them first): QUIT the kept connections.
            await resources.mailer.aclose()

    return {
        "queue": queue,
        "functions": [consumer(kind.task, send_email) for kind in CATALOGUE],
        "concurrency": settings.notifier_concurrency,
        "startup": startup,
        "shutdown": shutdown,
        "after_process": record_attempt,
        "shutdown_grace_period_s": settings.notifier_shutdown_grace_seconds,
        "timers": {"sweep": settings.notifier_sweep_seconds},
    }


def settings() -> dict[str, Any]:
    """For ``saq herald_notifier.worker.settings`` (SAQ calls a callable it is
    given): the worker configured by the environment.

    A function, not a dict built on import, so that importing this module
    needs no environment (``HERALD_LINK_SECRET`` is required): tests, the CLI
    and tools import ``build_settings`` without it.
    """
    return build_settings(Settings())

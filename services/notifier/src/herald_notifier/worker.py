"""The SAQ worker settings of the notifier.

``saq herald_notifier.worker.settings`` runs it with SAQ's own CLI;
``herald-notifier`` (``herald_notifier.cli``) runs it with Herald's logging.

**Crash recovery bound.** When a worker is SIGKILLed (or OOM-killed) with
``N`` jobs running, each of its jobs runs again on another worker within

    heartbeat + sweep + backoff(k) + schedule + send

- ``heartbeat`` (10 s, the task's policy): the job was touched at most
  ``heartbeat / 3`` s before the kill and is stuck ``heartbeat`` s after its
  last touch; its delivery claim's lease lapses at the same time;
- ``sweep`` (``HERALD_NOTIFIER_SWEEP_SECONDS``, 5 s): one live worker sweeps
  per interval (SAQ's default is 60 s), and re-queues every stuck job in one
  step each, without waiting on the dead worker (``NotifierQueue.sweep``;
  SAQ waited up to 5 s per stuck job, one after the other: ``N x 5 s``), so
  ``N`` drops out;
- ``backoff(k)``: the retry delay after attempt ``k``, up to
  ``2 ** (k - 1)`` s (1 s after a first attempt);
- ``schedule``: the next 1 s poll that moves a due retry to the queue.

With the defaults that is 17 s + send, for any concurrency. Measured before
the sweep stopped waiting (it then also waited 1 s for the abort; local
Redis, a fresh notifier process started at the kill, 5 runs): one job
13.0-13.3 s; ten jobs (concurrency 10, every slot busy) 12.9-13.3 s for all
ten (SAQ's sequential sweep took 22.7 s for the last of the ten).
``timeout`` plays no part: a job with a heartbeat is stuck long before it
times out. ``test_exactly_once`` checks the bound with a 2 s heartbeat and a
1 s sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from herald_notifier.catalogue import CATALOGUE
from herald_notifier.consumer import consumer
from herald_notifier.delivery import DeliveryRecords
from herald_notifier.faults import Faults
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
        settings.redis_url,
        name=queues.queue_name(queues.NOTIFIER, namespace=settings.queue_namespace),
        faults=Faults(settings.notifier_crash_at),
    )


def delivery_records(queue: NotifierQueue, settings: Settings) -> DeliveryRecords:
    """The delivery records of ``queue``, on its Redis."""
    return DeliveryRecords(
        queue.redis,
        queue_name=queue.name,
        record_ttl=timedelta(days=settings.notifier_delivery_record_days),
    )


def build_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``saq.Worker`` for a notifier configured by ``settings``.

    Creates the (unconnected) queue and nothing else; templates, the mailer,
    the delivery records, the metrics server and the queue depth task are
    made by the worker's startup; its shutdown cancels the task and closes the
    mailer's kept SMTP connections.
    """
    queue = connect_queue(settings)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[RESOURCES] = Resources(
            renderer=Renderer(
                settings.sender,
                link_secret=settings.link_secret,
                verify_url=str(settings.verify_url),
                reset_url=str(settings.reset_url),
            ),
            mailer=Mailer(settings),
            deliveries=delivery_records(queue, settings),
            faults=queue.faults,
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

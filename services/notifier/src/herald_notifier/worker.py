"""The SAQ worker settings of the notifier.

``saq herald_notifier.worker.settings`` runs it with SAQ's own CLI;
``herald-notifier`` (``herald_notifier.cli``) runs it with Herald's logging.
"""

from __future__ import annotations

from typing import Any

from herald_notifier.handlers import RESOURCES, Resources, send_welcome_email
from herald_notifier.mailer import Mailer
from herald_notifier.render import Renderer
from herald_notifier.settings import Settings
from herald_shared import queues
from herald_shared.tasks import SEND_WELCOME_EMAIL, consumer


def build_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``saq.Worker`` for a notifier configured by ``settings``.

    Creates the (unconnected) queue and nothing else; templates and the mailer
    are made by the worker's startup.
    """

    async def startup(ctx: dict[str, Any]) -> None:
        ctx[RESOURCES] = Resources(renderer=Renderer(settings.sender), mailer=Mailer(settings))

    return {
        "queue": queues.connect_queue(
            settings.redis_url, queues.NOTIFIER, namespace=settings.queue_namespace
        ),
        "functions": [consumer(SEND_WELCOME_EMAIL, send_welcome_email)],
        "concurrency": settings.notifier_concurrency,
        "startup": startup,
        "shutdown_grace_period_s": settings.notifier_shutdown_grace_seconds,
    }


settings = build_settings(Settings())

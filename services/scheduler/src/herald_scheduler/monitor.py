"""``herald-scheduler monitor``: SAQ's web monitor of the notifier and scheduler queues.

It shows each queue's queued, active and scheduled jobs and its workers'
stats, and can retry or abort a job, so it only ever runs behind HTTP basic
auth: ``HERALD_MONITOR_USER`` / ``HERALD_MONITOR_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import structlog
from aiohttp import web
from aiohttp_basicauth import BasicAuthMiddleware
from saq import Queue
from saq.web.aiohttp import QUEUES_KEY, create_app

from herald_scheduler.settings import Settings
from herald_shared import queues

__all__ = ["MIN_PASSWORD_LENGTH", "MonitorConfigError", "create_monitor", "credentials", "serve"]

MIN_PASSWORD_LENGTH = 12

SHUTDOWN_TIMEOUT_SECONDS = 5.0
"""How long open requests (the UI polls) get after SIGTERM before the monitor exits."""

log = structlog.get_logger(__name__)


class MonitorConfigError(ValueError):
    """The monitor's settings would leave it unprotected."""


def credentials(settings: Settings) -> tuple[str, str]:
    """The basic auth user and password of the monitor.

    Raises ``MonitorConfigError`` unless ``HERALD_MONITOR_PASSWORD`` has at
    least ``MIN_PASSWORD_LENGTH`` characters.
    """
    password = settings.monitor_password.get_secret_value() if settings.monitor_password else ""
    if len(password) < MIN_PASSWORD_LENGTH:
        state = "is not set" if not password else f"has only {len(password)} characters"
        raise MonitorConfigError(
            f"HERALD_MONITOR_PASSWORD {state}: the monitor can retry and abort jobs, so it "
            f"needs a password of at least {MIN_PASSWORD_LENGTH} characters"
        )
    return settings.monitor_user, password


def monitored_queues(settings: Settings) -> list[Queue]:
    """The notifier and scheduler queues of the deployment (not yet connected)."""
    return [
        queues.connect_queue(settings.redis_target, name, namespace=settings.queue_namespace)
        for name in (queues.NOTIFIER, queues.SCHEDULER)
    ]


def create_monitor(settings: Settings) -> web.Application:
    """SAQ's monitor app on this deployment's queues, behind basic auth.

    Raises ``MonitorConfigError`` as ``credentials`` does, and ``RuntimeError``
    if SAQ did not install basic auth.
    """
    user, password = credentials(settings)
    with _saq_auth_environment(user, password):
        app = create_app(monitored_queues(settings))
    # Fail closed: a SAQ that read its credentials elsewhere would serve the
    # monitor to anyone.
    if not any(isinstance(middleware, BasicAuthMiddleware) for middleware in app.middlewares):
        raise RuntimeError("SAQ's monitor came up without basic auth; refusing to serve it")
    app.on_startup.append(_connect_queues)
    return app


@contextlib.contextmanager
def _saq_auth_environment(user: str, password: str) -> Iterator[None]:
    """Put the credentials where SAQ's ``create_app`` reads them, for that call only.

    SAQ 0.26's ``create_app`` takes no credentials, only ``AUTH_USER`` /
    ``AUTH_PASSWORD`` from ``os.environ``; the previous values come back after,
    so the password does not linger there (docs/scheduler.md).
    """
    saved = {name: os.environ.get(name) for name in ("AUTH_USER", "AUTH_PASSWORD")}
    os.environ["AUTH_USER"] = user
    os.environ["AUTH_PASSWORD"] = password
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _connect_queues(app: web.Application) -> None:
    for queue in app[QUEUES_KEY].values():
        await queue.connect()


def serve(settings: Settings) -> None:
    """Serve the monitor on ``HERALD_MONITOR_HOST:HERALD_MONITOR_PORT`` until SIGINT/SIGTERM.

    Raises ``MonitorConfigError`` before binding anything if the credentials
    are unfit.
    """
    app = create_monitor(settings)
    host, port = settings.monitor_host, settings.monitor_port

    def started(_banner: str) -> None:
        log.info("monitor.started", url=f"http://{host}:{port}", user=settings.monitor_user)

    web.run_app(
        app,
        host=host,
        port=port,
        print=started,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    log.info("monitor.stopped")

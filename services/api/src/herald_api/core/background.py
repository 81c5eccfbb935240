"""Work a route leaves for after its response (so neither the answer nor its
timing depends on it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from fastapi import BackgroundTasks

log = structlog.get_logger(__name__)


def after_response(
    background: BackgroundTasks, work: Callable[[], Awaitable[object]], *, failed: str
) -> None:
    """Run ``work`` once the response is sent.

    The client has its answer by then, so a failure can only be logged (as
    the event ``failed``, with its traceback); the user may ask again.
    """

    async def run() -> None:
        try:
            await work()
        except Exception:
            log.exception(failed)

    background.add_task(run)

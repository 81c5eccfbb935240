"""One log line per HTTP request, with the request id bound for every line."""

from __future__ import annotations

import time

import structlog
from asgi_correlation_id import correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("herald_api.http")


class RequestLogMiddleware:
    """Binds ``request_id`` to the log context and logs ``http.request`` at the end.

    Must run inside ``CorrelationIdMiddleware``, which sets the id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=correlation_id.get()):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status_code,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )

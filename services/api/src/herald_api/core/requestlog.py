"""One log line and the metrics of each HTTP request, with the request id bound for every line."""

from __future__ import annotations

import time

import structlog
from asgi_correlation_id import correlation_id
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald_api.core.metrics import RequestMetrics

log = structlog.get_logger("herald_api.http")


class RequestLogMiddleware:
    """Binds ``request_id`` to the log context; at the end logs ``http.request`` and
    counts the request in the Prometheus metrics.

    Must run inside ``CorrelationIdMiddleware``, which sets the id.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.metrics = RequestMetrics()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # What the client sees if the app raises before answering: the server's 500.
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
                seconds = time.perf_counter() - started
                self.metrics.observe(scope, status_code=status_code, seconds=seconds)
                log.info(
                    "http.request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status_code,
                    duration_ms=round(seconds * 1000, 2),
                )

"""An httpx transport that sends each request to the next of several servers in turn.

For a client of several replicas of one API with no load balancer in front (the
Swarm stack publishes each API replica on a host port of its own): the client's
``base_url`` names any of them, and each request goes to the next URL of the list.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import httpx


class RoundRobinTransport(httpx.AsyncBaseTransport):
    """Rewrites each request's scheme, host and port to the next of ``urls``."""

    def __init__(self, urls: Sequence[str]) -> None:
        if not urls:
            raise ValueError("RoundRobinTransport needs at least one URL")
        self._targets = itertools.cycle([httpx.URL(url) for url in urls])
        self._transport = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = next(self._targets)
        request.url = request.url.copy_with(
            scheme=target.scheme, host=target.host, port=target.port
        )
        request.headers["Host"] = target.netloc.decode("ascii")
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._transport.aclose()


def api_urls(value: str) -> list[str]:
    """The URLs of a comma-separated list (``HERALD_E2E_API_URLS``), without trailing ``/``."""
    return [url.strip().rstrip("/") for url in value.split(",") if url.strip()]

"""The e2e suite speaks only HTTP: to the API and to MailDev's REST API.

Whoever starts the stack (``make e2e``) passes where they are:
``HERALD_E2E_API_URL`` and ``HERALD_E2E_MAILDEV_URL``. On the container stack
they also pass ``HERALD_E2E_COMPOSE_PROJECT``, which the deployment tests use to
restart and scale services; on the local stack ``HERALD_E2E_LOG_DIR``, where
each process writes its log.

On the Swarm stack (``make swarm-e2e``) the API runs as several replicas, each
on a host port of its own: ``HERALD_E2E_API_URLS`` (comma-separated) lists them
and the ``api`` client sends each request to the next in turn (unset: no change).
There ``HERALD_E2E_LOG_DIR`` holds the services' followed ``docker service logs``.
Every stack sets ``HERALD_E2E_LOG_DIR``: the browser tests write their
screenshots to its ``screenshots/`` (and to ``HERALD_SCREENSHOTS_DIR`` if set).

The browser fixtures (``browser_context``, ``page_watch``, ``page``: Debian's
Chromium, a page that fails its test on a console error or a CSP violation)
come from ``herald_testing.browser``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from herald_testing.browser import browser_context, page, page_watch
from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.roundrobin import RoundRobinTransport, api_urls

__all__ = ["browser_context", "page", "page_watch"]  # fixtures, for pytest to find


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.exit(f"{name} is not set: run the suite with `make e2e`.", returncode=4)
    return value


@pytest.fixture(scope="session")
def api_url() -> str:
    return _required("HERALD_E2E_API_URL").rstrip("/")


@pytest.fixture(scope="session")
def maildev_url() -> str:
    return _required("HERALD_E2E_MAILDEV_URL").rstrip("/")


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    replicas = api_urls(os.environ.get("HERALD_E2E_API_URLS", ""))
    transport = RoundRobinTransport(replicas) if replicas else None
    async with httpx.AsyncClient(base_url=api_url, timeout=10, transport=transport) as client:
        yield client


@pytest.fixture
async def inbox(maildev_url: str) -> AsyncIterator[MailDevClient]:
    client = MailDevClient(maildev_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def compose() -> Compose:
    project = os.environ.get("HERALD_E2E_COMPOSE_PROJECT")
    if not project:
        pytest.skip("needs the container stack: make e2e STACK=compose")
    return Compose(project)


@pytest.fixture(scope="session")
def service_logs() -> Callable[[], str]:
    """Everything the API, the notifier and the scheduler have logged so far, as text."""
    project = os.environ.get("HERALD_E2E_COMPOSE_PROJECT")
    if project:
        compose = Compose(project)
        return lambda: compose(
            "logs", "--no-color", "--no-log-prefix", "api", "notifier", "scheduler"
        )
    log_dir = Path(_required("HERALD_E2E_LOG_DIR"))
    names = ("api.log", "notifier.log", "scheduler.log")
    return lambda: "".join(
        (log_dir / name).read_text(encoding="utf-8", errors="replace") for name in names
    )

"""The outbox purge: the scheduler decides when, the API deletes.

The API itself cannot run here (no service imports another); an HTTP server
speaking the API's internal contract stands in for it, and the e2e suite runs
the purge against the real API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from herald_scheduler.internal_api import InternalApi
from herald_scheduler.jobs import SchedulerContext, purge_outbox
from herald_scheduler.settings import Settings
from herald_scheduler.worker import build_settings
from herald_testing.ports import free_port

TOKEN = "internal-token-for-tests"


@pytest.fixture
async def api_url() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP server with the API's purge contract; yields its URL and the bodies it got."""
    received: list[dict[str, Any]] = []

    async def purge(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"detail": "Not authenticated"}, status=401)
        received.append(await request.json())
        return web.json_response({"deleted": 3})

    app = web.Application()
    app.router.add_post("/internal/v1/outbox/purge", purge)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


async def test_purge_asks_the_api_with_the_token_and_logs_the_count(
    api_url: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = api_url
    api = InternalApi(base_url=url, token=SecretStr(TOKEN), timeout=5)
    ctx = cast(SchedulerContext, {"internal_api": api, "outbox_retention_seconds": 3600})
    try:
        with capture_logs() as logs:
            deleted = await purge_outbox(ctx)
    finally:
        await api.aclose()

    assert deleted == 3
    assert received == [{"older_than_seconds": 3600}]
    [line] = [line for line in logs if line["event"] == "outbox.purged"]
    assert line["deleted"] == 3


async def test_a_wrong_token_fails_the_run(api_url: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = api_url
    api = InternalApi(base_url=url, token=SecretStr("wrong"), timeout=5)
    ctx = cast(SchedulerContext, {"internal_api": api, "outbox_retention_seconds": 3600})
    try:
        with pytest.raises(httpx.HTTPStatusError, match="401"):
            await purge_outbox(ctx)
    finally:
        await api.aclose()
    assert received == []


def test_purge_is_scheduled_only_with_a_token() -> None:
    without = build_settings(Settings(internal_token=None))
    with_token = build_settings(
        Settings(internal_token=SecretStr(TOKEN), outbox_purge_cron="*/5 * * * *")
    )

    assert [job.function.__qualname__ for job in without["cron_jobs"]] == ["report_notifier_queue"]
    purge = [job for job in with_token["cron_jobs"] if job.function is purge_outbox]
    assert [(job.cron, job.unique) for job in purge] == [("*/5 * * * *", True)]

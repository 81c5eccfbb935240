"""Deployment properties of the container stack (make e2e STACK=compose).

Each test leaves the stack as it found it: one replica of each service.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter

import httpx
import pytest

from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.signups import sign_up


async def wait_ready(api: httpx.AsyncClient, *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if (await api.get("/health/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the API was not ready within {within} s")
        await asyncio.sleep(0.2)


async def test_one_signup_is_traceable_from_api_log_to_notifier_log(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    request_id = str(uuid.uuid4())
    address = await sign_up(api, request_id=request_id)
    await inbox.wait_for_email(address)

    def lines_of(service: str) -> list[str]:
        return [
            str(line["event"])
            for line in compose.json_logs(service)
            if line.get("request_id") == request_id
        ]

    assert "message.enqueued" in lines_of("api")
    deadline = time.monotonic() + 10
    while "email.sent" not in lines_of("notifier"):
        assert time.monotonic() < deadline, "no notifier log line carries the request id"
        await asyncio.sleep(0.5)


async def test_mail_flows_after_the_notifier_alone_restarts(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose("restart", "notifier")

    address = await sign_up(api)

    await inbox.wait_for_email(address, within=30.0)


async def test_two_notifier_replicas_send_each_email_exactly_once(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose.scale("notifier", 2)
    try:
        assert len(compose("ps", "--quiet", "notifier").split()) == 2
        addresses = [await sign_up(api) for _ in range(30)]
        await inbox.wait_for_all(addresses, within=15.0)
        await asyncio.sleep(2)  # let a would-be duplicate arrive before counting
        counts = await inbox.count_by_recipient(addresses)
        assert counts == dict.fromkeys(addresses, 1)
    finally:
        compose.scale("notifier", 1)


async def test_two_scheduler_replicas_fire_each_tick_once(compose: Compose) -> None:
    compose.scale("scheduler", 2)
    try:
        # The e2e stack's cron fires every 2 s: give both replicas a few ticks.
        await asyncio.sleep(12)
        ticks = Counter(
            line["tick"]
            for line in compose.json_logs("scheduler")
            if line.get("event") == "queue.report"
        )
        replicas = compose("ps", "--quiet", "scheduler").split()
    finally:
        compose.scale("scheduler", 1)

    assert len(replicas) == 2
    assert len(ticks) >= 4
    assert [tick for tick, runs in ticks.items() if runs > 1] == []


async def test_the_api_survives_a_redis_restart(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose("restart", "redis")
    await wait_ready(api)

    address = await sign_up(api)

    await inbox.wait_for_email(address, within=30.0)


@pytest.mark.parametrize("service", ["api", "notifier", "scheduler"])
def test_services_run_as_a_non_root_user(compose: Compose, service: str) -> None:
    assert compose("exec", "-T", service, "id", "-u").strip() == "10001"


@pytest.mark.parametrize(
    ("service", "foreign"),
    [
        ("notifier", "herald_api"),
        ("scheduler", "herald_notifier"),
        ("api", "herald_notifier"),
    ],
)
def test_an_image_holds_only_its_own_service(compose: Compose, service: str, foreign: str) -> None:
    probe = (
        "import importlib.util as u; "
        f"print(u.find_spec('{foreign}') is None, u.find_spec('herald_shared') is not None)"
    )
    assert compose("exec", "-T", service, "python", "-c", probe).split() == ["True", "True"]


async def test_metrics_count_signups_and_sent_emails(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    address = await sign_up(api)
    await inbox.wait_for_email(address)

    scrape = "import urllib.request; print(urllib.request.urlopen('{}').read().decode())"
    # Inside the network only: the API's own port does not serve them.
    assert (await api.get("/metrics")).status_code == 404
    api_metrics = compose(
        "exec", "-T", "api", "python", "-c", scrape.format("http://127.0.0.1:9100/metrics")
    )
    assert 'herald_api_signups_total{outcome="created"}' in api_metrics
    assert 'route="/api/v1/users",status="202"' in api_metrics
    notifier_metrics = compose(
        "exec", "-T", "notifier", "python", "-c", scrape.format("http://127.0.0.1:9101/metrics")
    )
    sent = [
        line
        for line in notifier_metrics.splitlines()
        if line.startswith("herald_notifier_emails_sent_total ")
    ]
    assert sent
    assert float(sent[0].split()[1]) >= 1
    scheduler_metrics = compose(
        "exec", "-T", "scheduler", "python", "-c", scrape.format("http://127.0.0.1:9102/metrics")
    )
    assert "herald_scheduler_cron_runs_total" in scheduler_metrics


async def test_the_queue_monitor_requires_its_password(compose: Compose) -> None:
    del compose  # only on the container stack
    url = os.environ["HERALD_E2E_MONITOR_URL"]
    async with httpx.AsyncClient(base_url=url, timeout=10) as monitor:
        assert (await monitor.get("/api/queues")).status_code == 401
        wrong = await monitor.get("/api/queues", auth=("admin", "not-the-password"))
        assert wrong.status_code == 401
        ok = await monitor.get("/api/queues", auth=("admin", "herald-monitor-dev-only"))
    assert ok.status_code == 200
    names = {queue["name"] for queue in ok.json()["queues"]}
    assert {"notifier", "scheduler"} <= names

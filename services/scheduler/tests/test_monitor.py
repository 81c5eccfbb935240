"""``herald-scheduler monitor``: SAQ's web monitor behind basic auth, on real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import test_utils
from pydantic import SecretStr
from saq import Queue, Status

from herald_scheduler.monitor import MonitorConfigError, create_monitor, credentials
from herald_scheduler.settings import Settings
from herald_shared import queues
from herald_testing.ports import free_port

PASSWORD = "correct horse battery"
AUTH = {"Authorization": aiohttp.encode_basic_auth("operator", PASSWORD)}


@pytest.fixture
def settings(redis_url: str, queue_namespace: str) -> Settings:
    return Settings(
        _env_file=None,
        redis_url=redis_url,
        queue_namespace=queue_namespace,
        monitor_user="operator",
        monitor_password=SecretStr(PASSWORD),
    )


@pytest.fixture
async def monitor(settings: Settings) -> AsyncIterator[test_utils.TestClient[Any, Any]]:
    async with test_utils.TestClient(test_utils.TestServer(create_monitor(settings))) as client:
        yield client


@pytest.mark.parametrize("password", [None, "", "eleven char"])
def test_refuses_a_missing_or_short_password(settings: Settings, password: str | None) -> None:
    unfit = settings.model_copy(
        update={"monitor_password": SecretStr(password) if password is not None else None}
    )

    with pytest.raises(MonitorConfigError, match="at least 12 characters"):
        credentials(unfit)
    with pytest.raises(MonitorConfigError):
        create_monitor(unfit)


def test_twelve_characters_are_enough(settings: Settings) -> None:
    fit = settings.model_copy(update={"monitor_password": SecretStr("twelve chars")})

    assert credentials(fit) == ("operator", "twelve chars")


def test_the_password_does_not_linger_in_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTH_USER", raising=False)
    monkeypatch.setenv("AUTH_PASSWORD", "someone else's")

    create_monitor(settings)

    assert "AUTH_USER" not in os.environ
    assert os.environ["AUTH_PASSWORD"] == "someone else's"


async def test_every_page_needs_the_credentials(
    monitor: test_utils.TestClient[Any, Any],
) -> None:
    for path in ("/", "/api/queues", "/health"):
        anonymous = await monitor.get(path)
        assert anonymous.status == 401, path
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    wrong = await monitor.get(
        "/api/queues", headers={"Authorization": aiohttp.encode_basic_auth("operator", "guess" * 4)}
    )
    assert wrong.status == 401


async def test_lists_the_notifier_and_scheduler_queues(
    monitor: test_utils.TestClient[Any, Any], queue_namespace: str
) -> None:
    response = await monitor.get("/api/queues", headers=AUTH)

    assert response.status == 200
    names = {queue["name"] for queue in (await response.json())["queues"]}
    assert names == {
        queues.queue_name(queues.NOTIFIER, namespace=queue_namespace),
        queues.queue_name(queues.SCHEDULER, namespace=queue_namespace),
    }


async def test_a_failed_notifier_job_can_be_retried(
    monitor: test_utils.TestClient[Any, Any], notifier_queue: Queue
) -> None:
    job = await notifier_queue.enqueue("send_welcome_email", retries=1)
    assert job is not None
    # What a worker does with a job whose only attempt raised.
    dequeued = await notifier_queue.dequeue()
    assert dequeued == job
    dequeued.attempts = 1
    await dequeued.finish(Status.FAILED, error="boom")
    path = f"/api/queues/{notifier_queue.name}/jobs/{job.key}"

    refused = await monitor.post(f"{path}/retry")
    shown = await monitor.get(path, headers=AUTH)
    assert refused.status == 401
    assert (await shown.json())["job"]["status"] == "failed"

    retried = await monitor.post(f"{path}/retry", headers=AUTH)

    assert retried.status == 200
    assert await retried.json() == {}
    stored = await notifier_queue.job(job.key)
    assert stored is not None
    assert stored.status == Status.QUEUED
    assert await notifier_queue.count("queued") == 1


async def test_the_monitor_process_refuses_to_start_without_a_password(
    redis_url: str, queue_namespace: str
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"HERALD_MONITOR_PASSWORD", "AUTH_PASSWORD"}
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_scheduler",
        "monitor",
        env=env | {"HERALD_REDIS_URL": redis_url, "HERALD_QUEUE_NAMESPACE": queue_namespace},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=15)

    assert process.returncode == 2
    assert stderr.decode().splitlines() == [
        "herald-scheduler monitor: HERALD_MONITOR_PASSWORD is not set: the monitor can "
        "retry and abort jobs, so it needs a password of at least 12 characters"
    ]
    assert stdout == b""


async def test_the_monitor_process_serves_behind_basic_auth_until_sigterm(
    redis_url: str, queue_namespace: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_LOG_FORMAT": "json",
        "HERALD_MONITOR_HOST": "127.0.0.1",
        "HERALD_MONITOR_PORT": str(port),
        "HERALD_MONITOR_USER": "operator",
        "HERALD_MONITOR_PASSWORD": PASSWORD,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_scheduler",
        "monitor",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/queues"
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            anonymous = await first_answer(http, url, process)
            authorised = await http.get(url, auth=("operator", PASSWORD))
        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert anonymous.status_code == 401
    assert authorised.status_code == 200
    assert len(authorised.json()["queues"]) == 2
    assert returncode == 0


async def first_answer(
    http: httpx.AsyncClient, url: str, process: asyncio.subprocess.Process
) -> httpx.Response:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"the monitor exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            return await http.get(url)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the monitor did not answer at {url}")

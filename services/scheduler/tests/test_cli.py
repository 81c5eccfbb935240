"""``herald-scheduler`` as a process: JSON logs, and a clean stop on a signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_logs_reports_and_stops_on_signal(
    redis_url: str, queue_namespace: str, signum: signal.Signals
) -> None:
    env = {
        **os.environ,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_QUEUE_REPORT_CRON": "* * * * * *",
        "HERALD_LOG_FORMAT": "json",
        "HERALD_SCHEDULER_SHUTDOWN_GRACE_SECONDS": "0",
        "HERALD_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "herald_scheduler", env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        report = await asyncio.wait_for(next_report(process.stdout), timeout=15)
        process.send_signal(signum)
        returncode = await asyncio.wait_for(process.wait(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert returncode == 0
    assert report["service"] == "scheduler"
    assert report["queue"] == f"{queue_namespace}:notifier"
    assert report["tick"] is not None


async def next_report(stdout: asyncio.StreamReader) -> dict[str, Any]:
    while line := await stdout.readline():
        entry: dict[str, Any] = json.loads(line)
        if entry["event"] == "queue.report":
            return entry
    pytest.fail("herald-scheduler exited before logging a queue.report")

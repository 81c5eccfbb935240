"""``python -m herald_notifier`` as a deployment runs it: env in, logs out, SIGTERM to stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from saq import Queue, Status

from herald_notifier.cli import quiet_job_lines
from herald_shared.tasks import enqueue
from herald_testing.jobs import FINISHED_JOB_SECONDS
from herald_testing.messages import LINK_SECRET, link_token, welcome_email
from herald_testing.smtp import serve_smtp
from herald_testing.waiting import eventually

HELD_FOR = 10.0
"""Longest the relay holds a message before replying (the test releases it sooner)."""


class HoldingRelay:
    """An aiosmtpd handler that holds each DATA until the test releases it."""

    def __init__(self) -> None:
        self.data_started = threading.Event()
        self.release = threading.Event()
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.data_started.set()
        await asyncio.to_thread(self.release.wait, HELD_FOR)
        self.received.append(envelope.content)
        return "250 2.0.0 queued"


@contextlib.contextmanager
def serving(handler: HoldingRelay) -> Iterator[int]:
    with serve_smtp(handler) as port:
        try:
            yield port
        finally:
            handler.release.set()


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def test_sigterm_lets_the_send_in_flight_finish_then_exits_cleanly(
    redis_url: str, queue_namespace: str, notifier_queue: Queue, tmp_path: Path
) -> None:
    relay = HoldingRelay()
    message = welcome_email(email="ada@example.com", display_name="Ada")
    output = tmp_path / "notifier.log"

    with serving(relay) as port, output.open("w") as sink:
        env = {
            **os.environ,
            "HERALD_REDIS_URL": redis_url,
            "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
            "HERALD_QUEUE_NAMESPACE": queue_namespace,
            "HERALD_SMTP_PORT": str(port),
            "HERALD_LOG_FORMAT": "json",
            "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "3",
            "HERALD_NOTIFIER_FINISHED_JOB_SECONDS": str(FINISHED_JOB_SECONDS),
            "HERALD_METRICS_PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "herald_notifier", env=env, stdout=sink, stderr=sink
        )
        try:
            job = await enqueue(notifier_queue, message)
            assert job is not None
            await eventually(relay.data_started.is_set, "the send to start", within=15)

            process.send_signal(signal.SIGTERM)
            shutting_down = lambda: any(  # noqa: E731
                "shutting down" in line["event"] for line in log_lines(output)
            )
            await eventually(shutting_down, "the worker to start shutting down")
            relay.release.set()
            returncode = await asyncio.wait_for(process.wait(), timeout=15)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    logs = log_lines(output)
    assert returncode == 0, output.read_text()
    done = await notifier_queue.job(job.key)
    assert done is not None
    assert (done.status, done.attempts) == (Status.COMPLETE, 1)
    assert len(relay.received) == 1
    [sent] = [line for line in logs if line["event"] == "email.sent"]
    assert sent["service"] == "notifier"
    assert sent["message_id"] == str(message.message_id)
    # SAQ's per-job lines are DEBUG's; its other lines stay.
    saq_lines = [line["event"] for line in logs if line["logger"] == "saq"]
    assert not [line for line in saq_lines if line.startswith(("Processing", "Finished"))]
    assert any(line.startswith("Worker starting") for line in saq_lines)
    # The address is personal data: no log line of a successful send may carry it;
    # the link's token is a credential: no log line at all may.
    assert "ada@example.com" not in output.read_text()
    assert message.verification is not None
    assert link_token(message.verification)[:12] not in output.read_text()


async def test_refuses_to_start_without_a_link_secret(
    redis_url: str, queue_namespace: str, tmp_path: Path
) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")} | {
        "HERALD_REDIS_URL": redis_url,
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "herald_notifier",
        env=env,
        cwd=tmp_path,  # away from any .env
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)

    assert process.returncode != 0
    assert b"link_secret" in output


@pytest.mark.parametrize(
    ("level", "msg", "root", "kept"),
    [
        (logging.INFO, "Processing %s", logging.INFO, False),
        (logging.INFO, "Finished %s", logging.INFO, False),
        (logging.INFO, "Processing %s", logging.DEBUG, True),
        (logging.INFO, "Finished %s", logging.DEBUG, True),
        (logging.INFO, "Retrying %s", logging.INFO, True),
        (logging.INFO, "Sweeping job %s", logging.INFO, True),
        (logging.ERROR, "Error processing job %s", logging.INFO, True),
    ],
)
def test_saq_per_job_lines_are_kept_for_debug(
    level: int, msg: str, root: int, kept: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(root)  # the root logger's, restored after the test
    record = logging.LogRecord("saq", level, "worker.py", 1, msg, ("Job<...>",), None)

    assert quiet_job_lines(record) is kept

"""Logging setup: JSON off a TTY, with bound context on every line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from saq import Queue

from herald_shared.logs import configure_logging
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.jobs import finished, running_worker, wait_for_job
from herald_testing.messages import welcome_email


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, saq = logging.getLogger(), logging.getLogger("saq")
    handlers, level, saq_filters = root.handlers[:], root.level, saq.filters[:]
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    saq.filters[:] = saq_filters
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_service_and_bound_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="api", fmt="json")

    with structlog.contextvars.bound_contextvars(request_id="r-1", message_id="m-1"):
        structlog.get_logger("herald.test").info("user.created", user_id="u-1")
        logging.getLogger("some.library").warning("from %s", "stdlib")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["user.created", "from stdlib"]
    for line in lines:
        assert line["service"] == "api"
        assert line["request_id"] == "r-1"
        assert line["message_id"] == "m-1"
        assert "timestamp" in line
    assert lines[0]["user_id"] == "u-1"
    assert lines[1]["level"] == "warning"


@pytest.mark.usefixtures("restore_logging")
def test_auto_format_is_json_when_stdout_is_not_a_tty(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="notifier")  # capsys: stdout is not a TTY

    structlog.get_logger("herald.test").info("email.sent")

    assert json.loads(capsys.readouterr().out)["event"] == "email.sent"


@pytest.mark.usefixtures("restore_logging")
async def test_a_failed_job_is_logged_without_its_message(
    unswept_notifier_queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    """SAQ logs a failed job whole; the lines must name it, not the person it is for."""
    configure_logging(service="notifier", fmt="json")

    async def refused(ctx: dict[str, Any], **payload: Any) -> None:
        # The consumer runtime is the notifier's; any job function that fails will do.
        raise RuntimeError("the relay said no")

    message = welcome_email(email="ada.lovelace@example.com", display_name="Ada Lovelace")
    job = SEND_WELCOME_EMAIL.job(message)
    job.retries = 1
    notifier_queue = unswept_notifier_queue
    async with running_worker(
        {"queue": notifier_queue, "functions": [(SEND_WELCOME_EMAIL.name, refused)]}
    ):
        await notifier_queue.enqueue(job)
        await wait_for_job(notifier_queue, job.key, finished)

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [error] = [line for line in lines if line["event"].startswith("Error processing job")]
    assert job.key in error["event"]
    assert "send_welcome_email" in error["event"]
    assert "the relay said no" in error["exception"]
    everything = "\n".join(json.dumps(line) for line in lines)
    for personal in ("ada.lovelace", "Lovelace", str(message.user_id)):
        assert personal not in everything

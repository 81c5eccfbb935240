"""Logging setup: JSON off a TTY, with bound context on every line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from herald_shared.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
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

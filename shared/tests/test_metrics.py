"""The metrics plumbing both workers share."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from saq import Job, Queue, Status, Worker

from herald_shared import metrics
from herald_shared.metrics import OTHER_FUNCTION, finished_attempt, serve_metrics
from herald_testing.ports import free_port


async def noop(_ctx: dict[str, Any]) -> None:
    """A job function for the worker below."""


@pytest.fixture
def worker(notifier_queue: Queue) -> Worker[Any]:
    return Worker(notifier_queue, [("send_welcome_email", noop)])


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (Status.COMPLETE, "complete"),
        (Status.QUEUED, "retried"),
        (Status.FAILED, "failed"),
        (Status.ABORTED, "aborted"),
        (Status.ACTIVE, None),
    ],
)
def test_an_attempt_is_judged_by_the_status_saq_left(
    worker: Worker[Any], status: Status, outcome: str | None
) -> None:
    ctx = {"worker": worker, "job": Job("send_welcome_email", status=status)}

    expected = ("send_welcome_email", outcome) if outcome else None
    assert finished_attempt(ctx) == expected


def test_a_function_the_worker_lacks_gets_one_label(worker: Worker[Any]) -> None:
    ctx = {"worker": worker, "job": Job("anything_at_all", status=Status.FAILED)}

    assert finished_attempt(ctx) == (OTHER_FUNCTION, "failed")


def test_a_context_without_a_job_is_no_attempt(worker: Worker[Any]) -> None:
    assert finished_attempt({"worker": worker}) is None


def test_port_zero_serves_nothing() -> None:
    assert serve_metrics("127.0.0.1", 0) is False


def test_a_taken_port_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_serving", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(RuntimeError, match=r"HERALD_METRICS_PORT=0 disables"):
            serve_metrics("127.0.0.1", port)


def test_metrics_are_served_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # The server thread outlives the test (prometheus_client has no stop); the
    # bookkeeping of which address it holds does not.
    monkeypatch.setattr(metrics, "_serving", {})
    port = free_port()

    assert serve_metrics("127.0.0.1", port) is True
    # A second worker startup in the same process: no second bind.
    assert serve_metrics("127.0.0.1", port) is True
    with pytest.raises(RuntimeError, match="already served"):
        serve_metrics("127.0.0.1", free_port())

    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert "python_info" in response.text

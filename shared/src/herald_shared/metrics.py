"""Prometheus plumbing both workers share.

- ``serve_metrics``: the default registry over HTTP, once per process;
- ``finished_attempt``: which function a job attempt ran and what it came to,
  as SAQ's ``after_process`` hook sees it.

The API serves its metrics on its own port (``GET /metrics``) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Literal

import structlog
from prometheus_client import start_http_server
from saq import Job, Status, Worker

__all__ = ["OTHER_FUNCTION", "Outcome", "finished_attempt", "serve_metrics"]

Outcome = Literal["complete", "retried", "failed", "aborted"]

OTHER_FUNCTION = "other"
"""The label of a job whose function the worker does not have."""

log = structlog.get_logger(__name__)

_lock = threading.Lock()
_serving: dict[str, tuple[str, int]] = {}

_OUTCOMES: dict[Status, Outcome] = {
    Status.COMPLETE: "complete",
    # Worker.process re-queues an attempt that raised while retryable, or that
    # a shutdown cancelled; either way the job runs again.
    Status.QUEUED: "retried",
    Status.FAILED: "failed",
    Status.ABORTING: "aborted",
    Status.ABORTED: "aborted",
}


def serve_metrics(host: str, port: int) -> bool:
    """Serve the default registry on ``http://host:port/metrics`` from a daemon thread.

    Once per process: a worker's ``startup`` may run more than once in one
    process (tests, a restarted ``Worker``), and a second bind of the port
    would fail. ``port`` 0 disables the server. Returns whether metrics are
    served. Raises ``RuntimeError`` if the port cannot be bound, or if this
    process already serves them on another address.
    """
    if port == 0:
        return False
    with _lock:
        if (current := _serving.get("address")) is not None:
            if current != (host, port):
                raise RuntimeError(
                    f"metrics are already served on {current[0]}:{current[1]}, not {host}:{port}"
                )
            return True
        try:
            start_http_server(port, addr=host)
        except OSError as exc:
            raise RuntimeError(
                f"cannot serve metrics on {host}:{port}: {exc} "
                "(HERALD_METRICS_PORT=0 disables the metrics server)"
            ) from exc
        _serving["address"] = (host, port)
    log.info("metrics.serving", host=host, port=port)
    return True


def finished_attempt(ctx: Mapping[str, object]) -> tuple[str, Outcome] | None:
    """The function label and outcome of the job attempt SAQ just ran.

    Read in an ``after_process`` hook, where ``Worker.process`` has already
    completed, re-queued or failed the job. The label is the job's function
    if the worker has it, else ``OTHER_FUNCTION``: a job name read from Redis
    must not grow the series without bound. ``None`` when the context holds
    no job or the attempt did not finish (the job is still marked active).
    """
    job, worker = ctx.get("job"), ctx.get("worker")
    if not isinstance(job, Job) or (outcome := _OUTCOMES.get(job.status)) is None:
        return None
    known = isinstance(worker, Worker) and job.function in worker.functions
    return (job.function if known else OTHER_FUNCTION), outcome

"""Tasks: which message goes to which queue under which name and job policy,
and the one way to enqueue and to consume each.

SAQ reads any enqueue kwarg named like a Job field (``key``, ``timeout``,
``meta``...) as job settings, so the message always travels as the single
kwarg ``payload`` of a ``Job`` built here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from saq import Job, Queue

from herald_shared import queues
from herald_shared.messages import Message, MessageError, WelcomeEmail

M = TypeVar("M", bound=Message)

PAYLOAD = "payload"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Task(Generic[M]):
    """A task of the contract, with the SAQ job policy every producer applies.

    SAQ's own defaults (``retries=1``, ``timeout=10``) mean a failed, timed-out
    or swept job is never retried; each task states its policy instead.
    ``retries`` counts attempts (SAQ: ``retryable = retries > attempts``).
    """

    name: str
    queue: str
    message: type[M]
    retries: int
    timeout: int
    retry_delay: float
    retry_backoff: float
    ttl: int = 7 * 24 * 3600

    def job(self, message: M) -> Job:
        """The SAQ job carrying ``message``; its key is the message id."""
        return Job(
            function=self.name,
            kwargs={PAYLOAD: message.encode()},
            key=str(message.message_id),
            retries=self.retries,
            timeout=self.timeout,
            retry_delay=self.retry_delay,
            retry_backoff=self.retry_backoff,
            ttl=self.ttl,
        )


SEND_WELCOME_EMAIL: Task[WelcomeEmail] = Task(
    name="send_welcome_email",
    queue=queues.NOTIFIER,
    message=WelcomeEmail,
    # 12 attempts with full-jitter exponential backoff from 1 s capped at 10 min:
    # rides out an SMTP outage of roughly an hour before giving up.
    retries=12,
    # One SMTP delivery normally takes milliseconds; 60 s covers a slow relay
    # without letting a hung connection hold a worker slot for long.
    timeout=60,
    retry_delay=1.0,
    retry_backoff=600.0,
)

TASKS: dict[str, Task[Any]] = {task.name: task for task in (SEND_WELCOME_EMAIL,)}


def task_for(message: Message) -> Task[Any]:
    """The task that carries messages of ``message``'s type."""
    for task in TASKS.values():
        if type(message) is task.message:
            return task
    raise LookupError(f"no task carries {type(message).__name__}")


async def enqueue(queue: Queue, message: Message) -> Job | None:
    """Validate ``message`` and put it on ``queue`` under its task's policy.

    Returns the job, or ``None`` when a job with the same message id is still
    queued, active or scheduled (SAQ refuses a duplicate key in flight).
    Raises ``MessageError`` before touching Redis if the message is invalid,
    and ``ValueError`` if ``queue`` is not the task's queue.
    """
    task = task_for(message)
    # Re-validate: model_construct() or model_copy(update=...) skip validation.
    task.message.decode(message.encode())
    if not _is_queue(queue.name, task.queue):
        raise ValueError(f"{task.name} belongs on queue {task.queue!r}, not {queue.name!r}")
    return await queue.enqueue(task.job(message))


def _is_queue(actual: str, base: str) -> bool:
    return actual == base or actual.endswith(f":{base}")


Handler = Callable[[dict[str, Any], M], Awaitable[Any]]


def consumer(task: Task[M], handler: Handler[M]) -> tuple[str, Callable[..., Awaitable[Any]]]:
    """Register ``handler`` for ``task`` in a SAQ worker's ``functions``.

    The returned SAQ function decodes the payload and binds ``message_id`` and
    ``request_id`` to the log context before calling ``handler(ctx, message)``.
    A malformed payload is logged and fails its job at once: retrying cannot
    make it valid.
    """

    async def run(ctx: dict[str, Any], *, payload: object = None) -> Any:
        job: Job | None = ctx.get("job")
        try:
            message = task.message.decode(payload)
        except MessageError as exc:
            log.error(
                "message.rejected",
                task=task.name,
                job_key=job.key if job else None,
                message_type=exc.message_type,
                problems=exc.problems,
            )
            if job is not None:
                fail_permanently(job)
            raise
        with structlog.contextvars.bound_contextvars(
            message_id=str(message.message_id),
            request_id=getattr(message, "request_id", None),
            task=task.name,
            attempt=job.attempts if job else None,
        ):
            return await handler(ctx, message)

    run.__qualname__ = task.name
    return task.name, run


def fail_permanently(job: Job) -> None:
    """Make the exception about to be raised fail ``job`` without a retry.

    SAQ retries while ``retries > attempts``; lowering ``retries`` to the
    attempts made is its only hook for "do not retry this one".
    """
    job.retries = job.attempts

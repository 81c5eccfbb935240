"""The notifier's side of a task: the SAQ function that decodes a job's
message and runs its handler under a ``Lease`` (the job's heartbeat), noting
on ``job.meta`` why an attempt failed (``herald_notifier.failures``).

Why a lost attempt must not touch its job, and what the lease renews, is in
docs/notifier.md ("The consumer and its lease").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import structlog
from saq import Job
from saq.utils import now

from herald_notifier.failures import failure_of, give_up, note_failure, one_line
from herald_notifier.saq_redis import touch, worker_cancel_cause
from herald_shared.messages import Message, MessageError
from herald_shared.tasks import PAYLOAD, Task

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "LEASE",
    "CancelCause",
    "Handler",
    "Lease",
    "cancel_cause",
    "consumer",
    "hold",
    "lease_of",
]

M = TypeVar("M", bound=Message)

Handler = Callable[[dict[str, Any], M], Awaitable[Any]]

LEASE = "lease"
"""The ctx key of the running attempt's ``Lease``."""

DEFAULT_LEASE_SECONDS = 600.0
"""The lease of a job with neither heartbeat nor timeout."""

log = structlog.get_logger(__name__)


def consumer(task: Task[M], handler: Handler[M]) -> tuple[str, Callable[..., Awaitable[Any]]]:
    """Register ``handler`` for ``task`` in a SAQ worker's ``functions``.

    The returned SAQ function decodes the payload, binds ``message_id``,
    ``request_id``, ``task`` and ``attempt`` to the log context, and calls
    ``handler(ctx, message)`` while a ``Lease`` (``ctx[LEASE]``) keeps the
    job's heartbeat fresh.

    - A malformed payload (or unexpected job arguments) is logged, noted on
      ``job.meta`` naming the bad fields, and fails its job at once: retrying
      cannot make it valid.
    - Any other exception is noted (unless the handler noted it first) and
      re-raised for SAQ to retry or fail the job.
    - A cancellation: SAQ's timeout is noted as a transient failure; a
      shutdown, an abort or a lost lease are left to SAQ.
    """

    async def run(ctx: dict[str, Any], **kwargs: Any) -> Any:
        job: Job | None = ctx.get("job")
        payload = kwargs.pop(PAYLOAD, None)
        try:
            message = _decode(task, payload, kwargs)
        except MessageError as exc:
            log.error(
                "message.rejected",
                task=task.name,
                job_key=job.key if job else None,
                message_type=exc.message_type,
                problems=exc.problems,
            )
            if job is not None:
                give_up(job, kind="malformed", reason=str(exc), error_class=type(exc).__name__)
            raise
        with structlog.contextvars.bound_contextvars(
            message_id=str(message.message_id),
            request_id=getattr(message, "request_id", None),
            task=task.name,
            attempt=job.attempts if job else None,
        ):
            if job is None:
                return await handler(ctx, message)
            async with hold(ctx, job) as lease:
                try:
                    return await handler(ctx, message)
                except asyncio.CancelledError:
                    _note_cancellation(ctx, job, lease)
                    raise
                except Exception as exc:
                    if failure_of(job) is None:
                        note_failure(
                            job,
                            kind="transient",
                            reason=one_line(str(exc)) or type(exc).__name__,
                            error_class=type(exc).__name__,
                        )
                    raise

    run.__qualname__ = task.name
    return task.name, run


def _decode(task: Task[M], payload: object, others: dict[str, Any]) -> M:
    if others:
        raise MessageError(
            task.message.__name__,
            [f"unexpected job arguments {sorted(others)}: the message travels as {PAYLOAD!r}"],
        )
    return task.message.decode(payload)


def lease_of(ctx: dict[str, Any]) -> Lease | None:
    """The lease of the attempt running with ``ctx``, if any."""
    lease = ctx.get(LEASE)
    return lease if isinstance(lease, Lease) else None


Renewal = Callable[[], Awaitable[bool]]


class Lease:
    """A running attempt's hold on its job, renewed every ``seconds / 3``.

    ``seconds`` is the job's ``heartbeat`` (else its ``timeout``). Each beat
    touches the job (``saq_redis.touch``, a compare-and-set) and runs the
    renewals the handler added (``keep``), e.g. a delivery claim's lease.

    The lease is *lost* when the stored job is no longer this attempt or a
    renewal says so, and *lapses* when no beat succeeded for ``seconds``;
    either way the attempt is cancelled at once (``lost`` says why).
    """

    def __init__(self, job: Job, *, owner: asyncio.Task[Any]) -> None:
        self.job = job
        self.seconds = float(job.heartbeat or job.timeout or DEFAULT_LEASE_SECONDS)
        self.lost: str | None = None
        self._owner = owner
        self._renewals: list[Renewal] = []

    @property
    def interval(self) -> float:
        """Seconds between beats."""
        return self.seconds / 3

    def keep(self, renew: Renewal) -> None:
        """Run ``renew`` on every beat from now on; it returns ``False`` when
        what it renews is no longer ours, which loses the lease."""
        self._renewals.append(renew)

    async def keep_alive(self) -> None:
        """Beat until cancelled, lost or lapsed."""
        loop = asyncio.get_running_loop()
        # The sweeper counts from the job's `touched` (set when the attempt started).
        since_touch = max(0.0, (now() - self.job.touched) / 1000) if self.job.touched else 0.0
        deadline = loop.time() + self.seconds - since_touch
        failing = False
        while True:
            await asyncio.sleep(max(0.0, min(self.interval, deadline - loop.time())))
            if loop.time() >= deadline:
                self._cancel(f"no heartbeat for {self.seconds:g} s")
                return
            began = loop.time()
            try:
                async with asyncio.timeout_at(deadline):
                    ours = await self._beat()
            except TimeoutError:
                continue
            except Exception as exc:
                # Redis unreachable or slow: try again; lapse at the deadline.
                if not failing:
                    log.warning("job.heartbeat_failed", job_key=self.job.key, error=repr(exc))
                failing = True
                continue
            if ours is False:
                self._cancel("the job or what the attempt holds is no longer this attempt's")
                return
            if ours:
                if failing:
                    log.info("job.heartbeat_recovered", job_key=self.job.key)
                failing = False
                deadline = began + self.seconds

    async def _beat(self) -> bool | None:
        touched = await touch(self.job)
        if not touched:
            return touched
        for renew in self._renewals:
            if not await renew():
                return False
        return True

    def _cancel(self, reason: str) -> None:
        self.lost = reason
        log.warning("job.lease_lost", job_key=self.job.key, reason=reason)
        self._owner.cancel()


@contextlib.asynccontextmanager
async def hold(ctx: dict[str, Any], job: Job) -> AsyncIterator[Lease]:
    """Keep ``job``'s lease (``ctx[LEASE]``) while the block runs in the job's task."""
    owner = asyncio.current_task()
    assert owner is not None
    lease = Lease(job, owner=owner)
    keeper = asyncio.create_task(lease.keep_alive(), name=f"lease:{job.key}")
    ctx[LEASE] = lease
    try:
        yield lease
    finally:
        keeper.cancel()
        await asyncio.wait({keeper}, timeout=1.0)
        ctx.pop(LEASE, None)


CancelCause = Literal["lost", "aborted", "shutdown", "timeout", "cancelled"]


def cancel_cause(ctx: dict[str, Any], job: Job) -> CancelCause:
    """Why the attempt running with ``ctx`` is being cancelled: ``lost`` (its
    lease), else as SAQ's worker shows it (``saq_redis.worker_cancel_cause``)."""
    lease = lease_of(ctx)
    if lease is not None and lease.lost is not None:
        return "lost"
    return worker_cancel_cause(ctx, job)


def _note_cancellation(ctx: dict[str, Any], job: Job, lease: Lease) -> None:
    cause = cancel_cause(ctx, job)
    if cause == "timeout":
        note_failure(
            job,
            kind="transient",
            reason=f"timed out after {job.timeout} s",
            error_class="TimeoutError",
        )
    log.warning("job.cancelled", cause=cause, job_key=job.key, lost=lease.lost)

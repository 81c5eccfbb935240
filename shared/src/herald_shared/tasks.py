"""Tasks: which message goes to which queue under which name and job policy,
and the one way to enqueue and to consume each.

SAQ reads any enqueue kwarg named like a Job field (``key``, ``timeout``,
``meta``...) as job settings, so the message always travels as the single
kwarg ``payload`` of a ``Job`` built here.

Producers use ``enqueue`` and ``Task.job`` only. Everything below
``consumer`` is the consumer side: decoding, the job's heartbeat and lease
(``Lease``), and the notes on ``job.meta`` that tell a dead-letter store why
an attempt failed (``note_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import structlog
from redis.exceptions import WatchError
from saq import Job, Queue, Status, Worker
from saq.queue.redis import RedisQueue
from saq.utils import now

from herald_shared import queues
from herald_shared.messages import (
    AccountExistsEmail,
    EmailChangedEmail,
    EmailChangeEmail,
    Message,
    MessageError,
    PasswordChangedEmail,
    PasswordResetEmail,
    VerificationEmail,
    WelcomeEmail,
)

M = TypeVar("M", bound=Message)

PAYLOAD = "payload"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Task(Generic[M]):
    """A task of the contract, with the SAQ job policy every producer applies.

    SAQ's own defaults (``retries=1``, ``timeout=10``, ``heartbeat=0``) mean a
    failed, timed-out or swept job is never retried and a crashed worker's job
    waits for its whole timeout; each task states its policy instead.

    - ``retries`` counts attempts (SAQ: ``retryable = retries > attempts``).
    - ``timeout``: SAQ cancels an attempt that runs longer (and its sweeper
      treats an active job older than this as stuck).
    - ``heartbeat``: the consumer touches the job every ``heartbeat / 3`` s
      while the handler runs (see ``Lease``); SAQ's sweeper treats a job not
      touched for ``heartbeat`` s as stuck, so a SIGKILLed worker's job is
      retried after about ``heartbeat`` s instead of ``timeout``.
    - ``retry_delay`` / ``retry_backoff``: SAQ's full-jitter exponential
      backoff: before attempt ``k + 1`` it waits ``U(0, min(retry_backoff,
      retry_delay * 2 ** (k - 1)))`` seconds.
    """

    name: str
    queue: str
    message: type[M]
    retries: int
    timeout: int
    heartbeat: int
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
            heartbeat=self.heartbeat,
            retry_delay=self.retry_delay,
            retry_backoff=self.retry_backoff,
            ttl=self.ttl,
        )


def _email_task(name: str, message: type[M]) -> Task[M]:
    """An email task of the notifier, under the one policy every account email shares."""
    return Task(name=name, queue=queues.NOTIFIER, message=message, **EMAIL_POLICY)


EMAIL_POLICY: dict[str, Any] = {
    # 25 attempts, full-jitter backoff from 1 s doubling to a 600 s cap: the 24
    # waits have caps 1, 2, 4 ... 512 s, then 14 x 600 s (9,423 s in all), so the
    # retries span 78 min on average (sd ~11 min; the worst case 2.6 h): a relay
    # outage of an hour is ridden out by ~95% of the jobs it hits. The old 12
    # attempts spanned only 13.5 min on average (27 min at worst), not the hour
    # its comment claimed. Attempts are also spent by a sweep after a crash and
    # by a clash with another live delivery claim, so a few are spare. A job out
    # of attempts is dead-lettered; `herald-notifier dead-letters replay` sends
    # it later, and the delivery record keeps that from doubling a sent email.
    "retries": 25,
    # A delivery normally takes milliseconds; each SMTP reply may take up to
    # HERALD_SMTP_TIMEOUT (15 s), so 60 s covers a slow relay without letting a
    # hung connection hold a worker slot for long. With a heartbeat the timeout
    # no longer decides how fast a crash is recovered, so it can stay generous.
    "timeout": 60,
    # Touched every ~3.3 s while running; untouched for 10 s = stuck. With the
    # notifier's 5 s sweep, a SIGKILLed worker's jobs run again within 18 s
    # (measured ~13 s; bound in herald_notifier.worker). Shorter would risk sweeping a live job
    # whose event loop stalled for a few seconds (the delivery claim would still
    # keep that from sending twice, but the attempt would be wasted).
    "heartbeat": 10,
    "retry_delay": 1.0,
    "retry_backoff": 600.0,
}
"""The SAQ job policy of every email task (see ``Task`` for what each field means)."""

SEND_WELCOME_EMAIL = _email_task("send_welcome_email", WelcomeEmail)
SEND_VERIFICATION_EMAIL = _email_task("send_verification_email", VerificationEmail)
SEND_ACCOUNT_EXISTS_EMAIL = _email_task("send_account_exists_email", AccountExistsEmail)
SEND_PASSWORD_RESET_EMAIL = _email_task("send_password_reset_email", PasswordResetEmail)
SEND_PASSWORD_CHANGED_EMAIL = _email_task("send_password_changed_email", PasswordChangedEmail)
SEND_EMAIL_CHANGE_EMAIL = _email_task("send_email_change_email", EmailChangeEmail)
SEND_EMAIL_CHANGED_EMAIL = _email_task("send_email_changed_email", EmailChangedEmail)

TASKS: dict[str, Task[Any]] = {
    task.name: task
    for task in (
        SEND_WELCOME_EMAIL,
        SEND_VERIFICATION_EMAIL,
        SEND_ACCOUNT_EXISTS_EMAIL,
        SEND_PASSWORD_RESET_EMAIL,
        SEND_PASSWORD_CHANGED_EMAIL,
        SEND_EMAIL_CHANGE_EMAIL,
        SEND_EMAIL_CHANGED_EMAIL,
    )
}


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


# --- consumer side ---------------------------------------------------------------------

Handler = Callable[[dict[str, Any], M], Awaitable[Any]]

FailureKind = Literal["malformed", "rejected", "unrenderable", "transient"]
"""Why an attempt failed, as dead letters and their metrics class it. Only
``transient`` failures are retried; a job that runs out of attempts on one is
dead-lettered as ``retries_exhausted``."""

FAILURE = "failure"
"""The ``job.meta`` key of the note on the last failed attempt."""

LEASE = "lease"
"""The ctx key of the running attempt's ``Lease``."""

DEFAULT_LEASE_SECONDS = 600.0
"""The lease of a job with neither heartbeat nor timeout."""


def consumer(task: Task[M], handler: Handler[M]) -> tuple[str, Callable[..., Awaitable[Any]]]:
    """Register ``handler`` for ``task`` in a SAQ worker's ``functions``.

    The returned SAQ function decodes the payload, binds ``message_id``,
    ``request_id``, ``task`` and ``attempt`` to the log context, and calls
    ``handler(ctx, message)`` while a ``Lease`` (``ctx[LEASE]``) keeps the
    job's heartbeat fresh.

    - A malformed payload (or unexpected job arguments) is logged, noted on
      ``job.meta`` naming the bad fields, and fails its job at once: retrying
      cannot make it valid.
    - Any other exception is noted (unless the handler noted it first, see
      ``note_failure``) and re-raised for SAQ to retry or fail the job.
    - A cancellation is told apart: SAQ's timeout is noted as a transient
      failure; a shutdown, an abort, or a lost lease are left to SAQ (see
      ``Lease`` for why a lost attempt must not touch its job).
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


def fail_permanently(job: Job) -> None:
    """Make the exception about to be raised fail ``job`` without a retry.

    SAQ retries while ``retries > attempts``; lowering ``retries`` to the
    attempts made is its only hook for "do not retry this one".
    """
    job.retries = job.attempts


def give_up(job: Job, *, kind: FailureKind, reason: str, error_class: str) -> None:
    """Note why ``job`` failed for good, and make the exception about to be
    raised fail it without a retry."""
    note_failure(job, kind=kind, reason=reason, error_class=error_class)
    fail_permanently(job)


def note_failure(job: Job, *, kind: FailureKind, reason: str, error_class: str) -> None:
    """Note on ``job.meta`` why its current attempt failed (one line, no
    personal data): what a dead letter shows if this was the last attempt.

    The note names its attempt, so a later attempt that fails without a note
    (a sweep, say) is never described by an earlier one's.
    """
    job.meta[FAILURE] = {
        "attempt": job.attempts,
        "kind": kind,
        "reason": one_line(reason),
        "error_class": error_class,
    }


def failure_of(job: Job) -> dict[str, Any] | None:
    """The note on ``job``'s current attempt, if it failed with one."""
    note = job.meta.get(FAILURE)
    if isinstance(note, dict) and note.get("attempt") == job.attempts:
        return note
    return None


def one_line(text: str, *, limit: int = 300) -> str:
    """``text`` on one line, whitespace collapsed, at most ``limit`` characters."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def lease_of(ctx: dict[str, Any]) -> Lease | None:
    """The lease of the attempt running with ``ctx``, if any."""
    lease = ctx.get(LEASE)
    return lease if isinstance(lease, Lease) else None


Renewal = Callable[[], Awaitable[bool]]


class Lease:
    """A running attempt's hold on its job, renewed every ``seconds / 3``.

    ``seconds`` is the job's ``heartbeat`` (else its ``timeout``). Each beat

    1. touches the job (``touched``), so SAQ's sweeper does not take it for
       stuck, with a compare-and-set instead of ``job.update()``:
       ``update()`` keeps the stored status, but by a read then a write, so a
       beat racing the sweeper can turn its ``aborting`` back into
       ``active``, and a beat of an attempt the sweeper already re-queued
       overwrites the next attempt's record (its attempts, worker, start);
    2. runs the renewals the handler added (``keep``), e.g. a delivery
       claim's lease.

    The lease is *lost* when the stored job is no longer this attempt (the
    sweeper re-queued it, another worker runs it, it is gone) or a renewal
    says so, and *lapses* when no beat succeeded for ``seconds`` (Redis
    unreachable: by then the sweeper may have handed the job on). Either
    way the attempt is cancelled at once (``lost`` says why): whatever comes
    next has the job. SAQ then leaves the job alone (its function task ended
    by itself), which is what a lost attempt must do: completing, retrying or
    failing it would overwrite the attempt that has it now.
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


async def touch(job: Job) -> bool | None:
    """Refresh ``job``'s ``touched`` in Redis if the stored job is still this
    attempt (active, same attempt count, same worker).

    Returns ``True`` once touched, ``False`` if the job is no longer this
    attempt's, ``None`` if undecided (the sweeper is aborting it, or it
    changed while we looked: try again next beat).
    """
    queue = job.get_queue()
    if not isinstance(queue, RedisQueue):
        await job.update()
        return True
    async with queue.redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(job.id)
            stored = queue.deserialize(await pipe.get(job.id))
            if (
                stored is None
                or stored.status not in (Status.ACTIVE, Status.ABORTING)
                or stored.attempts != job.attempts
                or stored.worker_id != job.worker_id
            ):
                return False
            if stored.status == Status.ABORTING:
                # SAQ's abort (the sweeper, or an operator) decides; our keeping
                # it alive would hide the abort from the worker's abort check.
                return None
            stored.touched = now()
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(job.id, queue.serialize(stored))
            await pipe.execute()
        except WatchError:
            return None
    job.touched = stored.touched
    return True


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
    """Why the attempt running with ``ctx`` is being cancelled.

    ``lost``: its lease (see ``Lease``); ``aborted``: SAQ's abort (operator,
    or the sweeper of a job it took for stuck); ``shutdown``: the worker is
    stopping (SAQ re-queues the job); ``timeout``: SAQ's ``job.timeout``.
    """
    lease = lease_of(ctx)
    if lease is not None and lease.lost is not None:
        return "lost"
    worker = ctx.get("worker")
    if isinstance(worker, Worker):
        running = worker.job_task_contexts.get(job)
        if running is not None and running["aborted"] is not None:
            return "aborted"
        if worker.event.is_set():
            return "shutdown"
    if job.timeout and job.started and (now() - job.started) / 1000 >= job.timeout - 0.5:
        return "timeout"
    return "cancelled"


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

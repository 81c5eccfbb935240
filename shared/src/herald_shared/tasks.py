"""Tasks: which message goes to which queue under which name and job policy,
and the one way to enqueue each.

SAQ reads any enqueue kwarg named like a Job field (``key``, ``timeout``,
``meta``...) as job settings, so the message always travels as the single
kwarg ``payload`` (``PAYLOAD``) of a ``Job`` built here. The consumer side
(decoding, the job's lease, failure notes) is the notifier's own
(``herald_notifier.consumer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from saq import Job, Queue

from herald_shared import queues
from herald_shared.messages import (
    AccountExistsEmail,
    EmailChangedEmail,
    EmailChangeEmail,
    Message,
    PasswordChangedEmail,
    PasswordResetEmail,
    SessionReuseEmail,
    VerificationEmail,
    WelcomeEmail,
)

__all__ = [
    "EMAIL_POLICY",
    "PAYLOAD",
    "SEND_ACCOUNT_EXISTS_EMAIL",
    "SEND_EMAIL_CHANGED_EMAIL",
    "SEND_EMAIL_CHANGE_EMAIL",
    "SEND_PASSWORD_CHANGED_EMAIL",
    "SEND_PASSWORD_RESET_EMAIL",
    "SEND_SESSION_REUSE_EMAIL",
    "SEND_VERIFICATION_EMAIL",
    "SEND_WELCOME_EMAIL",
    "TASKS",
    "Task",
    "enqueue",
    "task_for",
]

M = TypeVar("M", bound=Message)

PAYLOAD = "payload"
"""The one job kwarg that carries a message (encoded)."""


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
      while the handler runs (the notifier's ``Lease``); SAQ's sweeper treats a job not
      touched for ``heartbeat`` s as stuck, so a SIGKILLed worker's job is
      retried after about ``heartbeat`` s instead of ``timeout``.
    - ``retry_delay`` / ``retry_backoff``: SAQ's full-jitter exponential
      backoff: before attempt ``k + 1`` it waits ``U(0, min(retry_backoff,
      retry_delay * 2 ** (k - 1)))`` seconds.
    - ``ttl``: how long SAQ keeps a finished job, message included. The
      notifier does not honour it: it deletes a finished job (or keeps it
      without its message, ``HERALD_NOTIFIER_FINISHED_JOB_SECONDS``) and its
      delivery record is what stays. 10 min bounds the address and name an
      older notifier (before issue 13) keeps during a rolling deploy, and is
      still longer than the outbox reconciliation takes to read its ``complete``
      (docs/notifier.md, "Retention").
    """

    name: str
    queue: str
    message: type[M]
    retries: int
    timeout: int
    heartbeat: int
    retry_delay: float
    retry_backoff: float
    ttl: int = 600

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
SEND_SESSION_REUSE_EMAIL = _email_task("send_session_reuse_email", SessionReuseEmail)

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
        SEND_SESSION_REUSE_EMAIL,
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

"""Dead letters: jobs that failed for good, kept for an operator to read and replay.

Per queue, in the queue's Redis (the name carries the deployment's namespace):

- ``herald:{queue}:dead_letters``: a hash, message id (or the job key when no
  message id can be read from the payload) -> JSON ``{task, payload (raw, as
  received), reason (one line), error_class, kind, attempts, failed_at,
  job_key}``;
- ``herald:{queue}:dead_letters:by_time``: a sorted set of the same ids by
  ``failed_at`` (epoch seconds).

``NotifierQueue.finish`` writes a letter before SAQ marks the job failed, so a
crash in between leaves the job active (it is swept and fails again) rather
than failed without a letter. ``herald-notifier dead-letters list`` shows
them; ``herald-notifier dead-letters replay`` re-enqueues them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from saq import Job, Queue

from herald_notifier.failures import failure_of, one_line
from herald_shared.ledger import dead_letters_index_key, dead_letters_key
from herald_shared.messages import MessageError
from herald_shared.tasks import PAYLOAD, TASKS, enqueue

if TYPE_CHECKING:
    from redis.asyncio import Redis

_REMOVE_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """One job that failed for good."""

    message_id: str
    """The message's id, or the job key when the payload has none readable."""
    task: str
    payload: Any
    reason: str
    error_class: str
    kind: str
    """The reason's class (the metric label): malformed, rejected, unrenderable,
    retries_exhausted, stuck or failed."""
    attempts: int
    failed_at: str
    job_key: str

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["message_id"]
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, message_id: str, raw: str | bytes) -> DeadLetter:
        return cls(message_id=message_id, **json.loads(raw))


def letter_for(job: Job, error: str | None, *, swept: bool) -> DeadLetter:
    """The dead letter of ``job``, which SAQ is failing with ``error`` (or, if
    ``swept``, aborting as stuck with no attempt left).

    The reason comes from the consumer's note on the last attempt
    (``herald_notifier.failures.note_failure``) when there is one, else from SAQ's
    error (a sweep, an unknown function, ...).
    """
    kwargs = job.kwargs or {}
    payload = kwargs.get(PAYLOAD, kwargs) if isinstance(kwargs, dict) else kwargs
    note = failure_of(job)
    if swept:
        limits = [f"no heartbeat for {job.heartbeat} s"] if job.heartbeat else []
        limits += [f"running over {job.timeout} s"] if job.timeout else []
        kind, error_class = "stuck", "Swept"
        reason = (
            f"swept as stuck on attempt {job.attempts} of {job.retries} "
            f"({' or '.join(limits)}): its worker crashed or stalled"
        )
    elif note is not None and note["kind"] != "transient":
        kind, reason, error_class = note["kind"], note["reason"], note["error_class"]
    else:
        last = (
            (note["error_class"], note["reason"]) if note is not None else _last_error_line(error)
        )
        error_class = last[0]
        if job.attempts >= job.retries:
            kind = "retries_exhausted"
            tries = f"{job.attempts} attempt{'s' if job.attempts != 1 else ''}"
            reason = f"retries exhausted after {tries}; last: {last[1]}"
        else:
            kind, reason = "failed", last[1]
    return DeadLetter(
        message_id=_message_id(payload) or job.key,
        task=job.function,
        payload=payload,
        reason=one_line(reason),
        error_class=error_class,
        kind=kind,
        attempts=job.attempts,
        failed_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        job_key=job.key,
    )


def _message_id(payload: object) -> str | None:
    if not isinstance(payload, dict):
        return None
    try:
        return str(uuid.UUID(str(payload.get("message_id"))))
    except ValueError:
        return None


def _last_error_line(error: str | None) -> tuple[str, str]:
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "Unknown", "failed without an error"
    last = lines[-1]
    name = last.partition(":")[0]
    return (name.rsplit(".", 1)[-1] if re.fullmatch(r"[\w.]+", name) else "Error"), last


class DeadLetters:
    """The dead-letter store of one queue."""

    def __init__(self, redis: Redis, *, queue_name: str) -> None:
        self.redis = redis
        self.letters_key = dead_letters_key(queue_name)
        self.index_key = dead_letters_index_key(queue_name)
        self._remove_if_unchanged = redis.register_script(_REMOVE_IF_UNCHANGED)

    async def add(self, letter: DeadLetter) -> bool:
        """Store ``letter`` (replacing one with the same id); ``True`` if new."""
        failed_at = datetime.fromisoformat(letter.failed_at).timestamp()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.letters_key, letter.message_id, letter.to_json())
            pipe.zadd(self.index_key, {letter.message_id: failed_at})
            added, _ = await pipe.execute()
        return bool(added)

    async def entries(self) -> list[DeadLetter]:
        """Every letter, oldest first."""
        ids = [_text(raw) for raw in await self.redis.zrange(self.index_key, 0, -1)]
        return [letter for letter in await self.get(ids) if letter is not None]

    async def get(self, ids: Sequence[str]) -> list[DeadLetter | None]:
        """The letters of ``ids``, ``None`` for each one not stored."""
        if not ids:
            return []
        raws: list[bytes | None] = await self.redis.hmget(self.letters_key, list(ids))  # type: ignore[misc]
        return [
            DeadLetter.from_json(message_id, raw) if raw is not None else None
            for message_id, raw in zip(ids, raws, strict=True)
        ]

    async def remove(self, letter: DeadLetter) -> bool:
        """Remove ``letter`` unless it changed since it was read (the job failed
        again meanwhile: that newer letter stays). ``True`` if removed."""
        removed = await self._remove_if_unchanged(
            keys=[self.letters_key, self.index_key], args=[letter.message_id, letter.to_json()]
        )
        return bool(removed)


@dataclass(frozen=True)
class Replay:
    """What replaying one dead letter came to."""

    message_id: str
    replayed: bool
    detail: str


async def replay(store: DeadLetters, queue: Queue, ids: Iterable[str] | None) -> list[Replay]:
    """Re-enqueue the letters of ``ids`` (every letter if ``None``) through
    ``herald_shared.tasks.enqueue``.

    A letter is removed only once SAQ accepted its job. A payload that still
    does not decode, a task this notifier does not know, or a message whose
    job is still in flight is reported and kept. The delivery record still
    keeps a message that was in fact sent from being sent again.
    """
    if ids is None:
        letters: list[DeadLetter | None] = list(await store.entries())
        wanted = [letter.message_id for letter in letters if letter is not None]
    else:
        wanted = list(ids)
        letters = await store.get(wanted)
    results = []
    for message_id, letter in zip(wanted, letters, strict=True):
        results.append(await _replay_one(store, queue, message_id, letter))
    return results


async def _replay_one(
    store: DeadLetters, queue: Queue, message_id: str, letter: DeadLetter | None
) -> Replay:
    if letter is None:
        return Replay(message_id, False, "no such dead letter")
    task = TASKS.get(letter.task)
    if task is None:
        return Replay(message_id, False, f"kept: unknown task {letter.task!r}")
    try:
        message = task.message.decode(letter.payload)
    except MessageError as exc:
        return Replay(message_id, False, f"kept: still malformed: {exc}")
    job = await enqueue(queue, message)
    if job is None:
        return Replay(message_id, False, "kept: a job of this message is still queued or running")
    removed = await store.remove(letter)
    detail = f"re-enqueued as job {job.key}"
    if not removed:
        detail += " (its letter changed meanwhile and was kept)"
    return Replay(message_id, True, detail)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Where a message stands in Redis: the layout the outbox's reconciliation reads, defined once.

The API's outbox keeps a row until its message is settled; it cannot ask the
notifier, so it reads what the notifier and SAQ leave in Redis (the queue name
carries the deployment's namespace):

- the notifier's delivery record, ``herald:{queue}:delivery:{message_id}``, a
  string ``sent:``, ``skipped:`` (completed without a send: its link had
  expired, or its account was deleted), ``claimed:...`` or ``unconfirmed:``;
  what stays of a message once its job finished (docs/notifier.md, "Retention");
- its dead letters, the hash ``herald:{queue}:dead_letters`` (field: message
  id) and its index ``herald:{queue}:dead_letters:by_time``;
- SAQ's job, ``saq:job:{queue}:{message_id}`` (the job key is the message id,
  see ``herald_shared.tasks.Task.job``), stored as ``json.dumps(job.to_dict())``
  with ``status`` left out while it is SAQ's default, ``new``; the notifier
  deletes it as it finishes (an older notifier kept it ``complete`` for its
  ``ttl``, still read as settled); and SAQ's
  ``saq:{queue}:incomplete`` sorted set (every unfinished job, queued, running
  or waiting for a retry) and ``saq:{queue}:active`` list.

``read_standings`` reads a batch of messages in one pipeline of O(1) commands
plus one ``LPOS`` on the short ``active`` list each: never a scan. The
``queued`` list is not searched: SAQ adds a job to ``incomplete`` in the same
atomic step that puts it in ``queued`` (enqueue, retry, schedule) and removes it
from both in one step, so a queued job is always in ``incomplete``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from saq.job import TERMINAL_STATUSES, Status

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "SENT_PREFIX",
    "SKIPPED_PREFIX",
    "SKIP_UNLESS_SENT",
    "SaqStructure",
    "Standing",
    "dead_letters_index_key",
    "dead_letters_key",
    "delivery_record_key",
    "delivery_record_prefix",
    "job_key",
    "read_standings",
    "saq_key",
    "standing_of",
]

SaqStructure = Literal["queued", "active", "incomplete"]


def delivery_record_prefix(queue_name: str) -> str:
    """The common prefix of ``queue_name``'s delivery records."""
    return f"herald:{queue_name}:delivery:"


def delivery_record_key(queue_name: str, message_id: object) -> str:
    """The notifier's delivery record of ``message_id`` on ``queue_name``."""
    return f"{delivery_record_prefix(queue_name)}{message_id}"


def dead_letters_key(queue_name: str) -> str:
    """The hash of ``queue_name``'s dead letters, by message id."""
    return f"herald:{queue_name}:dead_letters"


def dead_letters_index_key(queue_name: str) -> str:
    """The sorted set of ``queue_name``'s dead letter ids, by the time they failed."""
    return f"{dead_letters_key(queue_name)}:by_time"


def job_key(queue_name: str, message_id: object) -> str:
    """SAQ's key of the job carrying ``message_id`` on ``queue_name`` (``Job.id``)."""
    return f"saq:job:{queue_name}:{message_id}"


def saq_key(queue_name: str, structure: SaqStructure) -> str:
    """SAQ's list (``queued``, ``active``) or sorted set (``incomplete``) of ``queue_name``."""
    return f"saq:{queue_name}:{structure}"


SENT_PREFIX = b"sent:"
"""How a delivery record that says "the relay accepted it" begins."""

SKIPPED_PREFIX = b"skipped:"
"""How a delivery record that says "completed, never to be sent" begins (a link that had
expired, an account deleted): the job that wrote it is gone, the record settles the row."""

SKIP_UNLESS_SENT = """
local record = redis.call('GET', KEYS[1])
if record and string.sub(record, 1, 5) == 'sent:' then return 0 end
redis.call('SET', KEYS[1], 'skipped:', 'PX', ARGV[1])
return 1
"""
"""Lua: make the record (KEYS[1]) ``skipped:`` for ARGV[1] ms unless it says ``sent:``
(1 if written). Overwrites a claim: an attempt holding one loses its lease and stops."""


class Standing(enum.StrEnum):
    """Where one message stands, and so what its outbox row waits for."""

    SENT = "sent"
    """Its delivery record says ``sent``: delivered, settle the row."""
    DEAD = "dead"
    """A dead letter holds it (and no job of it will run): settle the row as dead."""
    COMPLETED = "completed"
    """Completed without a send (e.g. the link had expired): its record says ``skipped``
    (or an older notifier's job is still stored ``complete``). Settled."""
    LIVE = "live"
    """A job of it will still run: wait."""
    MISSING = "missing"
    """No job, no ``sent``/``skipped`` record, no letter (Redis lost it, or the record
    expired before the row was settled): push again."""
    STRANDED = "stranded"
    """A job that will never run again and settled nothing: unfinished but in no list
    (a sweep that died half-way), or failed or aborted without a dead letter. Push again."""

    @property
    def settled(self) -> bool:
        return self in {Standing.SENT, Standing.DEAD, Standing.COMPLETED}

    @property
    def needs_push(self) -> bool:
        return self in {Standing.MISSING, Standing.STRANDED}


READS_PER_MESSAGE = 5


async def read_standings(
    redis: Redis, *, queue_name: str, message_ids: Sequence[object]
) -> dict[str, Standing]:
    """The standing of each of ``message_ids`` on ``queue_name``, keyed by ``str(id)``.

    One round trip, no transaction: each message is read in five commands
    (record, letter, job, ``ZSCORE incomplete``, ``LPOS active``) that may
    interleave with the notifier's writes; every change between them moves a
    message towards ``SENT``, ``DEAD`` or ``COMPLETED``, so a mixed view errs
    towards "push again", which the delivery record makes harmless.
    """
    ids = [str(message_id) for message_id in message_ids]
    if not ids:
        return {}
    letters = dead_letters_key(queue_name)
    incomplete = saq_key(queue_name, "incomplete")
    active = saq_key(queue_name, "active")
    async with redis.pipeline(transaction=False) as pipe:
        for message_id in ids:
            job = job_key(queue_name, message_id)
            pipe.get(delivery_record_key(queue_name, message_id))
            pipe.hexists(letters, message_id)
            pipe.get(job)
            pipe.zscore(incomplete, job)
            pipe.lpos(active, job)
        replies = await pipe.execute()
    standings: dict[str, Standing] = {}
    for index, message_id in enumerate(ids):
        record, lettered, job_bytes, score, position = replies[
            index * READS_PER_MESSAGE : (index + 1) * READS_PER_MESSAGE
        ]
        standings[message_id] = standing_of(
            record=record,
            dead_lettered=bool(lettered),
            job_status=_status(job_bytes),
            listed=score is not None or position is not None,
        )
    return standings


def standing_of(
    *, record: bytes | None, dead_lettered: bool, job_status: Status | None, listed: bool
) -> Standing:
    """Decide a message's standing from what Redis holds of it (``job_status`` ``None``:
    no job; ``listed``: the job is in ``incomplete`` or ``active``).

    ``sent`` wins over everything (a redelivered job will only be acknowledged);
    a job that will still run wins over a dead letter (a replay in progress).
    """
    if record is not None and record.startswith(SENT_PREFIX):
        return Standing.SENT
    if job_status is not None and job_status not in TERMINAL_STATUSES and listed:
        return Standing.LIVE
    if dead_lettered:
        return Standing.DEAD
    skipped = record is not None and record.startswith(SKIPPED_PREFIX)
    if skipped or job_status is Status.COMPLETE:
        return Standing.COMPLETED
    if job_status is None:
        return Standing.MISSING
    return Standing.STRANDED


def _status(job_bytes: bytes | None) -> Status | None:
    if job_bytes is None:
        return None
    try:
        stored = json.loads(job_bytes)
        return Status(stored.get("status", Status.NEW.value))
    except (ValueError, AttributeError):
        # Unreadable: no worker can run it either.
        return Status.FAILED

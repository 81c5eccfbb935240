"""Forgetting a deleted account's messages in Redis: its jobs that have not started are
deleted, every one of its messages is recorded ``skipped`` (so no attempt that is running
or comes later sends it), and its dead letters are deleted. What stays is the delivery
records, which hold a state and a message id, nothing personal.

Keys come from ``herald_shared.ledger`` (the layout the notifier and SAQ share);
docs/api.md ("The account use cases", deletion) says what happens to a job already running.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from herald_shared.ledger import (
    SKIP_UNLESS_SENT,
    dead_letters_index_key,
    dead_letters_key,
    delivery_record_key,
    job_key,
    saq_key,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

SKIPPED_RECORD_TTL = timedelta(days=1)
"""How long a deleted account's ``skipped`` records last: longer than any attempt of its
messages may still start (a running job's retries span 2.6 h at worst), or than a push
racing the deletion takes to land. Its outbox rows are gone: nothing pushes them again."""

_DELETE_UNLESS_RUNNING = """
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
local running = redis.call('LPOS', KEYS[4], KEYS[1])
local ok, job = pcall(cjson.decode, stored)
local status = ok and type(job) == 'table' and job['status'] or nil
if running or status == 'active' or status == 'aborting' then return -1 end
redis.call('LREM', KEYS[2], 0, KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('DEL', KEYS[1])
return 1
"""
"""KEYS: job, queued, incomplete, active. Deletes the job unless a worker has it (in
``active``, or marked running): 1 deleted, -1 running, 0 no job. One step: a worker
cannot take the job between the check and the delete."""

SCAN_COUNT = 500
"""Dead letters read per ``HSCAN`` step."""


@dataclass(frozen=True)
class Forgotten:
    """What forgetting an account's messages did on one queue."""

    jobs_deleted: int = 0
    """Jobs that had not started: deleted, never sent."""
    jobs_running: int = 0
    """Jobs a worker had: left to end; their attempt stops at the ``skipped`` record."""
    dead_letters_deleted: int = 0

    def __add__(self, other: Forgotten) -> Forgotten:
        return Forgotten(
            jobs_deleted=self.jobs_deleted + other.jobs_deleted,
            jobs_running=self.jobs_running + other.jobs_running,
            dead_letters_deleted=self.dead_letters_deleted + other.dead_letters_deleted,
        )


async def forget_messages(
    redis: Redis, *, queue_name: str, user_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> Forgotten:
    """Forget ``user_id``'s messages on ``queue_name``: ``message_ids`` (its outbox rows'
    messages, the ones that may have a job) and every dead letter of the user.

    One pipelined script per message, then one ``HSCAN`` of the dead letters (a hash
    operators keep small): deletion is rare, and a letter may outlive its outbox row.
    """
    deleted = running = 0
    if message_ids:
        delete_job = redis.register_script(_DELETE_UNLESS_RUNNING)
        skip = redis.register_script(SKIP_UNLESS_SENT)
        shared_keys = [saq_key(queue_name, s) for s in ("queued", "incomplete", "active")]
        ttl_ms = int(SKIPPED_RECORD_TTL.total_seconds() * 1000)
        async with redis.pipeline(transaction=False) as pipe:
            for message_id in message_ids:
                # First the record says skipped unless it says sent: whatever runs
                # from now on, or comes back (a push racing the deletion), stops at it.
                record = delivery_record_key(queue_name, message_id)
                await skip(keys=[record], args=[ttl_ms], client=pipe)
                job = job_key(queue_name, message_id)
                await delete_job(keys=[job, *shared_keys], client=pipe)
            replies = await pipe.execute()
        outcomes = replies[1::2]  # each message's job deletion, after its record write
        deleted = sum(1 for outcome in outcomes if outcome == 1)
        running = sum(1 for outcome in outcomes if outcome == -1)
    letters = await _delete_dead_letters(redis, queue_name=queue_name, user_id=user_id)
    return Forgotten(jobs_deleted=deleted, jobs_running=running, dead_letters_deleted=letters)


async def _delete_dead_letters(redis: Redis, *, queue_name: str, user_id: uuid.UUID) -> int:
    letters, index = dead_letters_key(queue_name), dead_letters_index_key(queue_name)
    doomed: list[str] = []
    async for field, letter in redis.hscan_iter(letters, count=SCAN_COUNT):
        if _user_of(letter) == str(user_id):
            doomed.append(field.decode() if isinstance(field, bytes) else str(field))
    if not doomed:
        return 0
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hdel(letters, *doomed)
        pipe.zrem(index, *doomed)
        removed, _ = await pipe.execute()
    return int(removed)


def _user_of(letter: bytes) -> str | None:
    """The ``user_id`` of a dead letter's payload (``None`` if it has none readable)."""
    try:
        payload = json.loads(letter).get("payload")
    except (ValueError, AttributeError):
        return None
    user_id = payload.get("user_id") if isinstance(payload, dict) else None
    return str(user_id) if user_id is not None else None

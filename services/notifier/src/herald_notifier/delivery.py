"""Delivery records: each message is sent at most once, whoever runs its jobs.

One Redis string per message, ``herald:{queue}:delivery:{message_id}``, in the
Redis that holds the jobs. Its value is the message's state:

- ``claimed:{owner}:{lease_until_ms}``: an attempt (``owner`` =
  ``worker/job key/attempt``) is sending it; the claim is live until
  ``lease_until_ms`` (Redis time), which the attempt's heartbeat pushes
  forward (``herald_notifier.consumer.Lease``). A live claim makes every other
  attempt back off: never two concurrent sends of one message.
- ``sent:``: the relay accepted it (250 to DATA). Any later attempt
  acknowledges its job without sending.
- ``skipped:``: it is never to be sent (its link had expired when an attempt
  ran, or its account was deleted); any later attempt ends its job unsent.
- ``unconfirmed:``: an attempt sent DATA and never heard the reply
  (connection lost, timeout, cancelled): the relay may have the message.

The values that outlive a job say their state and nothing else (no time, no
owner: no code reads one, and the record's TTL tells when it was written): what
stays of a message is ``MEMORY USAGE`` 136 bytes. Records expire after
``HERALD_NOTIFIER_DELIVERY_RECORD_DAYS``. Why a lease in the value, the window
between the relay's 250 and the ``sent`` record that cannot be closed, and why
7 days: docs/notifier.md ("Delivery records", "Retention").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from herald_shared.ledger import SKIP_UNLESS_SENT, delivery_record_prefix

if TYPE_CHECKING:
    from redis.asyncio import Redis

_CLAIM = """
local record = redis.call('GET', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local outcome = 'claimed'
if record then
  if string.sub(record, 1, 5) == 'sent:' then return {'sent', record} end
  if string.sub(record, 1, 8) == 'skipped:' then return {'skipped', record} end
  if string.sub(record, 1, 12) == 'unconfirmed:' then
    outcome = 'unconfirmed'
  else
    local lease_until = tonumber(string.match(record, ':(%d+)$'))
    if lease_until and lease_until > now then return {'held', record} end
    outcome = 'stale'
  end
end
local lease_until = string.format('%d', now + tonumber(ARGV[2]))
redis.call('SET', KEYS[1], 'claimed:' .. ARGV[1] .. ':' .. lease_until, 'PX', ARGV[3])
return {outcome, record or ''}
"""

_RENEW = """
local prefix = 'claimed:' .. ARGV[1] .. ':'
local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, #prefix) ~= prefix then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], prefix .. string.format('%d', now + tonumber(ARGV[2])), 'PX', ARGV[3])
return 1
"""

_END = """
local prefix = 'claimed:' .. ARGV[1] .. ':'
local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, #prefix) ~= prefix then return 0 end
if ARGV[2] == 'release' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], 'unconfirmed:', 'PX', ARGV[3])
end
return 1
"""


class Outcome(enum.StrEnum):
    """What a claim found."""

    CLAIMED = "claimed"
    """No record: the message is ours to send."""
    STALE = "stale"
    """An expired claim: a worker died holding it; ours now, maybe already sent."""
    UNCONFIRMED = "unconfirmed"
    """An attempt sent DATA and lost the reply; ours now, maybe already sent."""
    HELD = "held"
    """Another attempt holds a live claim: not ours, try later."""
    SENT = "sent"
    """Already sent: nothing to do."""
    SKIPPED = "skipped"
    """Never to be sent (its link expired, its account was deleted): nothing to do."""

    @property
    def ours(self) -> bool:
        """Whether the claim is ours to send under."""
        return self in (Outcome.CLAIMED, Outcome.STALE, Outcome.UNCONFIRMED)

    @property
    def possible_duplicate(self) -> bool:
        """Whether sending now may deliver the message a second time."""
        return self in (Outcome.STALE, Outcome.UNCONFIRMED)


@dataclass
class Claim:
    """One attempt's claim on one message."""

    key: str
    owner: str
    lease_seconds: float
    outcome: Outcome
    previous: str | None
    """The record the claim found (``None`` if there was none)."""
    settled: bool = field(default=False)
    """Marked sent, released or left unconfirmed: nothing left to renew."""


class DeliveryRecords:
    """The delivery records of one queue, on that queue's Redis."""

    def __init__(self, redis: Redis, *, queue_name: str, record_ttl: timedelta) -> None:
        self.redis = redis
        self.prefix = delivery_record_prefix(queue_name)
        self.record_ttl_ms = int(record_ttl.total_seconds() * 1000)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._end = redis.register_script(_END)
        self._skip = redis.register_script(SKIP_UNLESS_SENT)

    def key(self, message_id: object) -> str:
        """The Redis key of ``message_id``'s record."""
        return f"{self.prefix}{message_id}"

    async def record(self, message_id: object) -> str | None:
        """The record of ``message_id`` as stored, if any."""
        value = await self.redis.get(self.key(message_id))
        return value.decode() if isinstance(value, bytes) else value

    async def claim(self, message_id: object, *, owner: str, lease_seconds: float) -> Claim:
        """Claim ``message_id`` for ``owner`` for ``lease_seconds``, unless it
        is sent or held by a live claim (see ``Outcome``)."""
        key = self.key(message_id)
        outcome, previous = await self._claim(
            keys=[key], args=[owner, int(lease_seconds * 1000), self.record_ttl_ms]
        )
        return Claim(
            key=key,
            owner=owner,
            lease_seconds=lease_seconds,
            outcome=Outcome(_text(outcome)),
            previous=_text(previous) or None,
            settled=not Outcome(_text(outcome)).ours,
        )

    async def renew(self, claim: Claim) -> bool:
        """Push the claim's lease forward; ``False`` if it is no longer ours."""
        if claim.settled:
            return True
        renewed = await self._renew(
            keys=[claim.key],
            args=[claim.owner, int(claim.lease_seconds * 1000), self.record_ttl_ms],
        )
        return bool(renewed)

    async def mark_sent(self, claim: Claim) -> None:
        """Record the message as sent: one unconditional ``SET``, so that
        nothing but one round trip follows the relay's 250."""
        await self.redis.set(claim.key, "sent:", px=self.record_ttl_ms)
        claim.settled = True

    async def mark_skipped(self, message_id: object) -> bool:
        """Record ``message_id`` as completed unsent (its link had expired), unless it
        was sent: the outbox settles its row by this once the job is gone. ``True`` if
        written."""
        written = await self._skip(keys=[self.key(message_id)], args=[self.record_ttl_ms])
        return bool(written)

    async def release(self, claim: Claim) -> bool:
        """Drop the claim if it is still ours: the message was not sent and the
        next attempt may go at once. ``False`` if it was not ours any more."""
        return await self._finish(claim, "release")

    async def leave_unconfirmed(self, claim: Claim) -> bool:
        """End the claim, if still ours, as ``unconfirmed``: DATA went out and
        its reply never came, so the relay may have the message."""
        return await self._finish(claim, "unconfirmed")

    async def _finish(self, claim: Claim, how: str) -> bool:
        if claim.settled:
            return False
        claim.settled = True
        done = await self._end(keys=[claim.key], args=[claim.owner, how, self.record_ttl_ms])
        return bool(done)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

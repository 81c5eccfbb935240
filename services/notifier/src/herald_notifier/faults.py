"""Deliberate crashes at named points of a message's life, for crash tests only.

``HERALD_NOTIFIER_CRASH_AT=<point>`` makes the notifier process end at once, as
a SIGKILL or an OOM kill would, the first time it reaches that point; unset
(the default) no point does anything. The crash-point tests
(``services/notifier/tests/test_crash_points.py``) run a real notifier with
it, let it die there, and check that a second notifier keeps the promise of
that point: delivered once, or delivered and counted as a possible duplicate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from herald_notifier.delivery import Claim, DeliveryRecords
from herald_shared import faults
from herald_shared.faults import CRASH_STATUS, crash

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["CRASH_STATUS", "NO_FAULTS", "CrashPoint", "CrashingDeliveryRecords", "Faults", "crash"]

CrashPoint = Literal[
    "after_dequeue",
    "after_claim",
    "after_smtp_accept",
    "after_mark",
    "before_retry",
    "sweep_before_requeue",
    "sweep_after_requeue",
    "before_dead_letter",
    "after_dead_letter",
]
"""Where the notifier can be made to crash:

- ``after_dequeue``: the job moved to the active list, not yet marked active;
- ``after_claim``: the delivery claim taken, nothing sent;
- ``after_smtp_accept``: the relay said 250, the ``sent`` record not written;
- ``after_mark``: the ``sent`` record written, the job not yet completed;
- ``before_retry``: an attempt failed (a 4xx, say), its re-queue not yet written;
- ``sweep_before_requeue`` / ``sweep_after_requeue``: the sweeper found a
  stuck job, right before / right after its one-step re-queue;
- ``before_dead_letter`` / ``after_dead_letter``: a job failing for good,
  right before / right after its one-step "dead letter and fail".
"""

Faults = faults.Faults[CrashPoint]
"""The fault switch of one notifier process (``herald_shared.faults``)."""

NO_FAULTS: Faults = Faults()
"""The switch of every process not under a crash test."""


class CrashingDeliveryRecords(DeliveryRecords):
    """Delivery records that also reach the delivery crash points: ``after_claim``
    (a claim ours to send under), ``after_smtp_accept`` (the ``sent`` mark about
    to be written) and ``after_mark`` (written). The worker makes these instead
    of plain ones only when a crash point is set, so the handler has no switch."""

    def __init__(
        self, redis: Redis, *, queue_name: str, record_ttl: timedelta, faults: Faults
    ) -> None:
        super().__init__(redis, queue_name=queue_name, record_ttl=record_ttl)
        self.faults = faults

    async def claim(self, message_id: object, *, owner: str, lease_seconds: float) -> Claim:
        claim = await super().claim(message_id, owner=owner, lease_seconds=lease_seconds)
        if claim.outcome.ours:
            self.faults.reach("after_claim", message_id=str(message_id))
        return claim

    async def mark_sent(self, claim: Claim) -> None:
        self.faults.reach("after_smtp_accept")
        await super().mark_sent(claim)
        self.faults.reach("after_mark")

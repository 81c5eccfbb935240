"""Crash-test doubles of the outbox's moving parts: each dies at its named point.

Installed by ``open_outbox`` only when ``HERALD_API_CRASH_AT`` names a point, so
the code every request runs holds no fault switch. ``core.faults`` lists the points.
"""

from __future__ import annotations

import uuid
from typing import Any

from saq import Job, Queue
from sqlmodel.ext.asyncio.session import AsyncSession

from herald_api.core.faults import Faults
from herald_api.outbox.dispatch import Dispatcher, RelayedMarks
from herald_api.outbox.reconciliation import Reconciler
from herald_api.outbox.relay import Relay
from herald_shared.messages import Message


class CrashingMarks(RelayedMarks):
    """Dies at ``before_relayed_mark``: the batched marks are about to be written."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    async def flush(self) -> int:
        if self._pending:
            self.faults.reach("before_relayed_mark", messages=len(self._pending))
        return await super().flush()


class CrashingDispatcher(Dispatcher):
    """Dies at ``after_commit`` (a message committed, nothing pushed) or at ``after_push``
    (Redis took it, its row not yet queued for its relayed mark)."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    async def publish_after_commit(
        self, session: AsyncSession, message: Message, *, user_id: uuid.UUID
    ) -> bool:
        self.faults.reach("after_commit", user_id=str(user_id), message_id=str(message.message_id))
        return await super().publish_after_commit(session, message, user_id=user_id)

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        job = await super()._push(queue, message)
        self.faults.reach("after_push", message_id=str(message.message_id))
        return job


class CrashingRelay(Relay):
    """Dies at ``relay_after_push``: a row of its batch pushed, the batch not committed."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        job = await super()._push(queue, message)
        self.faults.reach("relay_after_push", message_id=str(message.message_id))
        return job


class CrashingReconciler(Reconciler):
    """Dies at ``reconcile_after_push``: a lost message pushed again, its count not committed."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    async def _push(self, queue: Queue, message: Message) -> Job | None:
        job = await super()._push(queue, message)
        if job is not None:
            self.faults.reach("reconcile_after_push", message_id=str(message.message_id))
        return job

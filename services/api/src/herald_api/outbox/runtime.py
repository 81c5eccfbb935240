"""What the outbox holds open for the API's lifetime: the fast path, its batched marks,
the relay and the reconciliation, built once from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import structlog

from herald_api.core.infrastructure import Infrastructure
from herald_api.outbox.crashing import (
    CrashingDispatcher,
    CrashingMarks,
    CrashingReconciler,
    CrashingRelay,
)
from herald_api.outbox.dispatch import Dispatcher, RelayedMarks
from herald_api.outbox.reconciliation import Reconciler
from herald_api.outbox.relay import Relay

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Outbox:
    dispatcher: Dispatcher
    marks: RelayedMarks
    relay: Relay
    reconciler: Reconciler


def build_outbox(infrastructure: Infrastructure) -> Outbox:
    """The outbox's parts; under a crash test (``HERALD_API_CRASH_AT``) the ones that die."""
    settings = infrastructure.settings
    sessions, queues = infrastructure.sessions, infrastructure.queues
    faults = settings.faults
    marks_of: Callable[..., RelayedMarks] = RelayedMarks
    dispatcher_of: Callable[..., Dispatcher] = Dispatcher
    relay_of: Callable[..., Relay] = Relay
    reconciler_of: Callable[..., Reconciler] = Reconciler
    if faults.crash_at is not None:
        log.warning(
            "fault.enabled",
            setting="HERALD_API_CRASH_AT",
            point=faults.crash_at,
            effect="this process ends the first time it reaches that point (crash tests only)",
        )
        marks_of = partial(CrashingMarks, faults=faults)
        dispatcher_of = partial(CrashingDispatcher, faults=faults)
        relay_of = partial(CrashingRelay, faults=faults)
        reconciler_of = partial(CrashingReconciler, faults=faults)
    marks = marks_of(sessions)
    return Outbox(
        dispatcher=dispatcher_of(
            queues,
            marks=marks,
            timeout_seconds=settings.enqueue_timeout_seconds,
            grace_seconds=settings.outbox_fast_path_grace_seconds,
        ),
        marks=marks,
        relay=relay_of(
            sessions=sessions,
            queues=queues,
            batch_size=settings.outbox_batch_size,
            poll_seconds=settings.outbox_poll_seconds,
            max_backoff_seconds=settings.outbox_max_backoff_seconds,
            push_timeout_seconds=settings.enqueue_timeout_seconds,
        ),
        reconciler=reconciler_of(
            sessions=sessions,
            queues=queues,
            batch_size=settings.outbox_batch_size,
            push_timeout_seconds=settings.enqueue_timeout_seconds,
        ),
    )


@asynccontextmanager
async def open_outbox(infrastructure: Infrastructure) -> AsyncIterator[Outbox]:
    """Start the relay and the marks; stop them (writing pending marks) when closing."""
    outbox = build_outbox(infrastructure)
    outbox.relay.start()
    outbox.marks.start()
    try:
        yield outbox
    finally:
        # Before the pool and the queue close under them.
        await outbox.relay.stop()
        await outbox.marks.stop()

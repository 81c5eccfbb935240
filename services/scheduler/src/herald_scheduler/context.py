"""The scheduler's SAQ job context: the keys its jobs read, set and cleared here only.

The worker's ``startup`` calls ``open_context`` and its ``shutdown``
``close_context``; a job reads its keys from the ``ctx`` SAQ passes it.
"""

from __future__ import annotations

from saq import Queue
from saq.types import Context

from herald_scheduler.internal_api import InternalApi
from herald_scheduler.settings import Settings
from herald_shared import queues

__all__ = ["SchedulerContext", "close_context", "open_context"]


class SchedulerContext(Context, total=False):
    """SAQ's job context plus what ``open_context`` adds."""

    notifier_queue: Queue
    """The notifier's queue, connected for the worker's lifetime."""
    internal_api: InternalApi
    """The API's internal endpoints (only when HERALD_INTERNAL_TOKEN is set, as are the
    ages below)."""
    outbox_retention_seconds: int
    """How long ago an outbox row must have been settled to be purged."""
    outbox_reconcile_after_seconds: int
    """How long an unsettled outbox row's message may go unchecked in Redis."""
    verification_reminder_after_seconds: int
    """How long after signup an unverified user is reminded."""
    unverified_account_seconds: int
    """How long after signup an unverified user is deleted."""
    token_retention_seconds: int
    """How long after use or expiry a verification token is deleted."""
    idempotency_key_retention_seconds: int
    """How long after expiry an idempotency key is deleted."""
    session_retention_seconds: int
    """How long after it ended (revoked, expired or idle) a login session is deleted."""


async def open_context(ctx: SchedulerContext, settings: Settings) -> None:
    """Connect the notifier queue into ``ctx``; with an internal token, also the API
    client and the ages its jobs send."""
    notifier = queues.connect_queue(
        settings.redis_target, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    await notifier.connect()
    ctx["notifier_queue"] = notifier
    if settings.internal_token is None:
        return
    ctx["internal_api"] = InternalApi(
        base_url=settings.api_url,
        token=settings.internal_token,
        timeout=settings.api_timeout_seconds,
    )
    ctx["outbox_retention_seconds"] = settings.outbox_retention_seconds
    ctx["outbox_reconcile_after_seconds"] = settings.outbox_reconcile_after_seconds
    ctx["verification_reminder_after_seconds"] = settings.verification_reminder_after_seconds
    ctx["unverified_account_seconds"] = settings.unverified_account_seconds
    ctx["token_retention_seconds"] = settings.token_retention_seconds
    ctx["idempotency_key_retention_seconds"] = settings.idempotency_key_retention_seconds
    ctx["session_retention_seconds"] = settings.session_retention_seconds


async def close_context(ctx: SchedulerContext) -> None:
    """Disconnect and close what ``open_context`` put in ``ctx``."""
    notifier = ctx.pop("notifier_queue", None)
    if notifier is not None:
        await notifier.disconnect()
    internal_api = ctx.pop("internal_api", None)
    if internal_api is not None:
        await internal_api.aclose()

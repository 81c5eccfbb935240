"""The one handler of every email task (``send_email``; the worker registers
it once per row of ``herald_notifier.catalogue``), and the resources it finds
in SAQ's ctx.

Its result, which SAQ reports as the job's: ``sent``, ``duplicate_suppressed``
(an earlier attempt had sent it), ``link_expired`` (its link had expired:
nothing sent, no retry; its delivery record says ``skipped``) or ``skipped``
(its record said so: the account was deleted). A failure raises instead. Why:
docs/notifier.md ("Results and failures").
"""

from __future__ import annotations

import asyncio
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiosmtplib import SMTPException
from saq import Job, Worker

from herald_notifier.catalogue import link_of
from herald_notifier.consumer import DEFAULT_LEASE_SECONDS, lease_of
from herald_notifier.delivery import Claim, DeliveryRecords, Outcome
from herald_notifier.failures import classify, give_up, note_failure
from herald_notifier.mailer import Mailer
from herald_notifier.metrics import (
    CLAIM_CONFLICTS,
    DELIVERY_MARK_SECONDS,
    DELIVERY_MARKS_FAILED,
    DUPLICATES_SUPPRESSED,
    EMAILS_SKIPPED,
    POSSIBLE_DUPLICATES,
    measure_send,
)
from herald_notifier.render import RenderedEmail, Renderer, RenderError
from herald_shared.messages import AccountEmail, EmailLink, Message

RESOURCES = "notifier"
"""The ctx key under which the worker's startup puts ``Resources``."""

MARK_ATTEMPTS = 3
"""Tries at writing the sent record before the handler gives up on it."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    """What every handler needs, made once per worker."""

    renderer: Renderer
    mailer: Mailer
    deliveries: DeliveryRecords


class ClaimHeldError(Exception):
    """Another attempt holds a live claim on this message: try again later."""


async def send_email(ctx: dict[str, Any], message: AccountEmail) -> str:
    """Render ``message``'s email (``Renderer.render``) and ``deliver`` it, at
    most once; or, if its link has expired, neither (``skip_expired``:
    ``link_expired``). One clock reading per attempt decides the expiry and
    dates the email. The handler of every row of the catalogue.

    A failure a retry can fix propagates so SAQ retries under the task's
    backoff; a permanent one (a 5xx about this message) also fails the job at
    once. A message that does not render fails its job at once as
    ``unrenderable`` (rendering is deterministic); what is logged, noted and
    raised is a ``RenderError`` of fixed text or naming only the error's class
    and place, never an arbitrary exception's text, which might quote the link.
    """
    resources: Resources = ctx[RESOURCES]
    job: Job | None = ctx.get("job")
    domain = recipient_domain(message.email)
    now = datetime.now(UTC)
    link = link_of(message)
    if link is not None and link.expires_at <= now:
        # Before any claim, nothing sent. The job is deleted as it completes: the
        # record is what tells the outbox this message is settled (docs, "Retention").
        await resources.deliveries.mark_skipped(message.message_id)
        return skip_expired(link, recipient_domain=domain)
    try:
        email = resources.renderer.render(message, now=now)
    except Exception as exc:
        failure = exc if isinstance(exc, RenderError) else unexpected_render_error(exc)
        error_class = type(exc).__name__
        log.error(
            "email.render_failed",
            error=str(failure),
            error_class=error_class,
            recipient_domain=domain,
        )
        if job is not None:
            reason = f"render failed: {failure}"
            give_up(job, kind="unrenderable", reason=reason, error_class=error_class)
        raise failure from None
    return await deliver(ctx, resources, message, email, recipient_domain=domain)


def skip_expired(link: EmailLink, *, recipient_domain: str) -> str:
    """Log and count an email not sent because ``link`` had expired; the job's
    result, ``link_expired``. The log line names the link's expiry, never its
    token id or the recipient's address."""
    EMAILS_SKIPPED.labels("link_expired").inc()
    log.info(
        "email.skipped",
        reason="link_expired",
        recipient_domain=recipient_domain,
        expires_at=link.expires_at.isoformat(),
    )
    return "link_expired"


def unexpected_render_error(exc: Exception) -> RenderError:
    """A ``RenderError`` standing for ``exc`` (a bug): its class and the file
    and line it was raised at, never its text."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return RenderError(f"unexpected {type(exc).__name__}{where}")


async def deliver(
    ctx: dict[str, Any],
    resources: Resources,
    message: Message,
    email: RenderedEmail,
    *,
    recipient_domain: str,
) -> str:
    """Claim ``message``, send ``email``, record it sent (see
    ``herald_notifier.delivery``); what became of it: ``sent``,
    ``duplicate_suppressed`` or ``skipped``."""
    lease = lease_of(ctx)
    deliveries = resources.deliveries
    claim = await _claim(ctx, deliveries, message, recipient_domain=recipient_domain)
    if claim.outcome == Outcome.SENT:
        return "duplicate_suppressed"
    if claim.outcome == Outcome.SKIPPED:
        return "skipped"
    if lease is not None:
        lease.keep(lambda: deliveries.renew(claim))
    await _send(ctx, resources, claim, email, recipient_domain=recipient_domain)
    log.info(
        "email.sent",
        recipient_domain=recipient_domain,
        possible_duplicate=claim.outcome.possible_duplicate,
    )
    return "sent"


async def _claim(
    ctx: dict[str, Any], deliveries: DeliveryRecords, message: Message, *, recipient_domain: str
) -> Claim:
    """Claim ``message`` for this attempt; raises ``ClaimHeldError`` if another
    attempt holds it. A claim found ``sent`` or ``skipped`` is returned (nothing to do)."""
    lease = lease_of(ctx)
    claim = await deliveries.claim(
        message.message_id,
        owner=owner_of(ctx),
        lease_seconds=lease.seconds if lease is not None else DEFAULT_LEASE_SECONDS,
    )
    if claim.outcome == Outcome.SENT:
        DUPLICATES_SUPPRESSED.inc()
        log.info(
            "email.duplicate_suppressed", record=claim.previous, recipient_domain=recipient_domain
        )
    elif claim.outcome == Outcome.SKIPPED:
        EMAILS_SKIPPED.labels("recorded_skipped").inc()
        log.info("email.skipped", reason="recorded_skipped", recipient_domain=recipient_domain)
    elif claim.outcome == Outcome.HELD:
        CLAIM_CONFLICTS.inc()
        log.info("email.claim_held", holder=claim.previous, recipient_domain=recipient_domain)
        raise ClaimHeldError("another attempt is sending this message right now")
    elif claim.outcome.possible_duplicate:
        crash = claim.outcome == Outcome.STALE
        POSSIBLE_DUPLICATES.labels("crash" if crash else "unconfirmed").inc()
        log.warning(
            "email.redelivered_after_crash" if crash else "email.redelivered_unconfirmed",
            previous=claim.previous,
            recipient_domain=recipient_domain,
        )
    return claim


async def _send(
    ctx: dict[str, Any],
    resources: Resources,
    claim: Claim,
    email: RenderedEmail,
    *,
    recipient_domain: str,
) -> None:
    """Send ``email`` under ``claim`` and mark it sent straight after the 250."""
    deliveries = resources.deliveries
    session = resources.mailer.session()
    polite = True
    try:
        try:
            with measure_send():
                await session.send(email)
        except (SMTPException, OSError) as exc:
            await _end_claim(deliveries, claim, reply_lost=session.reply_lost(exc))
            _note_send_failure(ctx.get("job"), exc, recipient_domain=recipient_domain)
            raise
        except BaseException as exc:
            # Cancelled mid-send (a shutdown, SAQ's timeout, a lost lease) or a
            # bug: no QUIT, just let go of the claim.
            polite = False
            await _end_claim(deliveries, claim, reply_lost=session.reply_lost(exc))
            raise
        # The relay said 250: record it before anything else, QUIT included.
        await _mark_sent(deliveries, claim)
    finally:
        await session.close(polite=polite)


def _note_send_failure(
    job: Job | None, exc: SMTPException | OSError, *, recipient_domain: str
) -> None:
    failure = classify(exc)
    reason = failure.reason
    if failure.smtp_code is not None:
        reason = f"SMTP {failure.smtp_code}: {reason}"
    error_class = type(exc).__name__
    if job is not None and failure.permanent:
        give_up(job, kind="rejected", reason=reason, error_class=error_class)
    elif job is not None:
        note_failure(job, kind="transient", reason=reason, error_class=error_class)
    details = {
        "smtp_code": failure.smtp_code,
        "reason": failure.reason,
        "recipient_domain": recipient_domain,
    }
    if failure.permanent:
        log.error("email.rejected", **details)
    elif job is not None and not job.retryable:
        log.error("email.failed", retries_exhausted=True, **details)
    else:
        log.warning("email.deferred", **details)


async def _mark_sent(deliveries: DeliveryRecords, claim: Claim) -> None:
    """Write the sent record, retrying briefly; shielded from cancellation (the
    record is true whatever happens to the attempt now)."""
    accepted = time.perf_counter()
    mark = asyncio.ensure_future(_write_mark(deliveries, claim))
    try:
        await asyncio.shield(mark)
    except asyncio.CancelledError:
        # Give the record a moment to land before the cancellation goes on.
        await asyncio.wait({mark}, timeout=5.0)
        raise
    finally:
        if mark.done() and not mark.cancelled() and mark.exception() is None:
            DELIVERY_MARK_SECONDS.observe(time.perf_counter() - accepted)


async def _write_mark(deliveries: DeliveryRecords, claim: Claim) -> None:
    for attempt in range(1, MARK_ATTEMPTS + 1):
        try:
            await deliveries.mark_sent(claim)
        except Exception as exc:
            if attempt < MARK_ATTEMPTS:
                await asyncio.sleep(0.2 * attempt)
                continue
            # The email is out: the job succeeded. Only a redelivery of this
            # message would send it again (counted as a possible duplicate).
            DELIVERY_MARKS_FAILED.inc()
            log.error("email.sent_unrecorded", error=repr(exc))
        return


async def _end_claim(deliveries: DeliveryRecords, claim: Claim, *, reply_lost: bool) -> None:
    """Give the claim up after a failed or cancelled send: released if the
    relay cannot have the message (nothing reached DATA, or the relay answered
    it with a 4xx/5xx refusal), else left ``unconfirmed`` (DATA went out, no
    reply came). Never raises (an unreleased claim lapses with its lease)."""
    try:
        if reply_lost:
            await deliveries.leave_unconfirmed(claim)
            log.warning("email.outcome_unknown", reason="DATA sent, no reply")
        else:
            await deliveries.release(claim)
    except Exception as exc:
        log.warning("email.claim_not_released", error=repr(exc))


def owner_of(ctx: dict[str, Any]) -> str:
    """Who claims a message: ``worker id/job key/attempt``."""
    worker = ctx.get("worker")
    job: Job | None = ctx.get("job")
    worker_id = worker.id if isinstance(worker, Worker) else f"local-{uuid.uuid4()}"
    if job is None:
        return f"{worker_id}/-/0"
    return f"{worker_id}/{job.key}/{job.attempts}"


def recipient_domain(address: str) -> str:
    """The domain of ``address``: all of it that logs may show."""
    return address.rpartition("@")[2].lower()

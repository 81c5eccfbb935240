"""The notifier's task handlers, and the resources they find in SAQ's ctx."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
from aiosmtplib import SMTPException
from saq import Job

from herald_notifier.failures import classify
from herald_notifier.mailer import Mailer
from herald_notifier.metrics import measure_send
from herald_notifier.render import Renderer
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import fail_permanently

RESOURCES = "notifier"
"""The ctx key under which the worker's startup puts ``Resources``."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Resources:
    """What every handler needs, made once per worker."""

    renderer: Renderer
    mailer: Mailer


async def send_welcome_email(ctx: dict[str, Any], message: WelcomeEmail) -> None:
    """Render and send the welcome email of ``message``.

    A failure a retry can fix propagates so SAQ retries under the task's
    backoff; a permanent one (a 5xx about this message, an unrenderable
    message) also fails the job at once.
    """
    resources: Resources = ctx[RESOURCES]
    job: Job | None = ctx.get("job")
    domain = recipient_domain(message.email)
    try:
        email = resources.renderer.welcome(message)
    except ValueError as exc:
        log.error("email.render_failed", error=str(exc), recipient_domain=domain)
        _give_up(job)
        raise
    try:
        with measure_send():
            await resources.mailer.send(email)
    except (SMTPException, OSError) as exc:
        failure = classify(exc)
        details = {
            "smtp_code": failure.smtp_code,
            "reason": failure.reason,
            "recipient_domain": domain,
        }
        if failure.permanent:
            log.error("email.rejected", **details)
            _give_up(job)
        elif job is not None and not job.retryable:
            log.error("email.failed", retries_exhausted=True, **details)
        else:
            log.warning("email.deferred", **details)
        raise
    log.info("email.sent", recipient_domain=domain)


def recipient_domain(address: str) -> str:
    """The domain of ``address``: all of it that logs may show."""
    return address.rpartition("@")[2].lower()


def _give_up(job: Job | None) -> None:
    if job is not None:
        fail_permanently(job)

"""The scheduler's settings, read from the environment (prefix ``HERALD_``)."""

from __future__ import annotations

from typing import Self

from croniter import croniter
from pydantic import Field, SecretStr, field_validator, model_validator

from herald_shared.internal_api import (
    MAX_AGE_SECONDS,
    MIN_AGE_SECONDS,
    AgeSeconds,
    InternalToken,
)
from herald_shared.settings import CommonSettings, MetricsPort

__all__ = ["DAY_SECONDS", "Settings"]

DAY_SECONDS = 24 * 3600


class Settings(CommonSettings):
    """Everything the scheduler reads from its environment: the common settings, when
    each cron job runs and with which age, the API it calls, and the monitor."""

    metrics_port: MetricsPort = 9102
    queue_report_cron: str = Field(
        default="* * * * *",
        description="When to log the notifier queue report, as a cron string in UTC "
        "(croniter syntax). Five fields: minute hour day month weekday; an optional "
        "sixth field is seconds and comes LAST (`* * * * * */10`: every 10 s). "
        "Intervals under 2 s are not honoured (see docs/scheduler.md).",
    )
    api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of the API, whose internal endpoints do the work the "
        "scheduler triggers (the API is the only writer of the accounts database).",
    )
    internal_token: InternalToken = Field(
        default=None,
        description="Bearer token of the API's internal endpoints (the API's "
        "HERALD_INTERNAL_TOKEN, at least 16 characters). Unset or empty: the jobs that need "
        "the API are not scheduled.",
    )
    outbox_reconcile_cron: str = Field(
        default="* * * * *",
        description="When to ask the API to reconcile the outbox with Redis: settle the rows "
        "whose message was delivered or dead-lettered, push again those Redis lost (cron, UTC).",
    )
    outbox_reconcile_after_seconds: AgeSeconds = Field(
        default=300,
        description="An unsettled outbox row is checked in Redis once its message has gone "
        "this long without being pushed or checked: longer than a job normally takes to be "
        "sent, so a check rarely finds it still queued.",
    )
    outbox_purge_cron: str = Field(
        default="*/10 * * * *",
        description="When to ask the API to delete settled outbox rows (cron, UTC).",
    )
    outbox_retention_seconds: AgeSeconds = Field(
        default=DAY_SECONDS,
        description="Outbox rows settled longer ago than this are deleted by the purge; rows "
        "not settled are never deleted.",
    )
    verification_reminder_cron: str = Field(
        default="*/10 * * * *",
        description="When to ask the API to remind unverified users to verify (cron, UTC).",
    )
    verification_reminder_after_seconds: AgeSeconds = Field(
        default=DAY_SECONDS,
        description="A user still unverified this long after signup gets one reminder "
        "email with a fresh verification link (never a second one).",
    )
    unverified_purge_cron: str = Field(
        # Hourly, off the hour: away from the other jobs that fire at minute 0.
        default="15 * * * *",
        description="When to ask the API to delete accounts never verified (cron, UTC).",
    )
    unverified_account_days: int = Field(
        default=7,
        ge=1,
        le=MAX_AGE_SECONDS // DAY_SECONDS,
        description="Accounts still unverified this many days after signup are deleted, "
        "with their tokens.",
    )
    token_purge_cron: str = Field(
        default="45 * * * *",
        description="When to ask the API to delete spent verification tokens (cron, UTC).",
    )
    token_retention_seconds: AgeSeconds = Field(
        default=DAY_SECONDS,
        description="Verification tokens used or expired longer ago than this are deleted.",
    )
    idempotency_key_purge_cron: str = Field(
        # Hourly, off the other jobs' minutes.
        default="35 * * * *",
        description="When to ask the API to delete expired idempotency keys (cron, UTC).",
    )
    idempotency_key_retention_seconds: AgeSeconds = Field(
        default=MIN_AGE_SECONDS,
        description="Idempotency keys expired longer ago than this are deleted (an expired "
        "key is free already: the purge only reclaims its row).",
    )
    session_purge_cron: str = Field(
        # Daily, at a quiet minute no other job uses.
        default="25 3 * * *",
        description="When to ask the API to delete login sessions that ended long ago (cron, UTC).",
    )
    session_retention_seconds: AgeSeconds = Field(
        default=7 * DAY_SECONDS,
        description="Login sessions that ended (logged out or otherwise revoked, past their "
        "absolute end, or unused for the API's HERALD_SESSION_IDLE_DAYS) longer ago than this "
        "are deleted; sessions in force are never deleted.",
    )
    api_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long one internal API call may take."
    )
    scheduler_shutdown_grace_seconds: int = Field(
        # A report takes milliseconds, and a cancelled run is re-queued for another replica,
        # so a short grace loses nothing while keeping every (even idle) stop this quick.
        default=2,
        ge=0,
        description="On SIGTERM/SIGINT, how long a running cron job may finish before it is "
        "cancelled. SAQ waits this long even when idle, so keep the container stop timeout "
        "above it plus 1 s.",
    )

    monitor_host: str = Field(
        default="127.0.0.1",
        description="Address `herald-scheduler monitor` binds (0.0.0.0 in a container).",
    )
    monitor_port: int = Field(
        default=8080, ge=1, le=65535, description="Port `herald-scheduler monitor` listens on."
    )
    monitor_user: str = Field(
        default="admin",
        min_length=1,
        pattern=r"^[^:]+$",
        description="HTTP basic auth user of the monitor (no colon).",
    )
    monitor_password: SecretStr | None = Field(
        default=None,
        description="HTTP basic auth password of the monitor: required by "
        "`herald-scheduler monitor`, at least 12 characters.",
    )

    @field_validator(
        "queue_report_cron",
        "outbox_reconcile_cron",
        "outbox_purge_cron",
        "verification_reminder_cron",
        "unverified_purge_cron",
        "token_purge_cron",
        "idempotency_key_purge_cron",
        "session_purge_cron",
        mode="after",
    )
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = value.strip()
        if not croniter.is_valid(value):
            raise ValueError(
                f"not a valid cron string: {value!r} (expected 5 fields, minute hour day "
                "month weekday, or 6 with seconds last, e.g. '*/5 * * * *')"
            )
        return value

    @model_validator(mode="after")
    def _reminder_before_purge(self) -> Self:
        # Otherwise accounts are deleted before they are ever reminded: a
        # misconfiguration that silently turns reminders off.
        if self.verification_reminder_after_seconds >= self.unverified_account_seconds:
            raise ValueError(
                "HERALD_VERIFICATION_REMINDER_AFTER_SECONDS "
                f"({self.verification_reminder_after_seconds}) must be less than "
                f"HERALD_UNVERIFIED_ACCOUNT_DAYS ({self.unverified_account_days}) in "
                f"seconds ({self.unverified_account_seconds}): unverified accounts would be "
                "deleted before their reminder"
            )
        return self

    @property
    def unverified_account_seconds(self) -> int:
        """``unverified_account_days`` in seconds, as the API's purge takes it."""
        return self.unverified_account_days * DAY_SECONDS

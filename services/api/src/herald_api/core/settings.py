"""The API's settings, read from the environment (prefix ``HERALD_``)."""

from __future__ import annotations

import os
from functools import cache
from typing import Literal, Self

from limits import RateLimitItem, parse_many
from pydantic import (
    Field,
    PostgresDsn,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from herald_api.core.faults import CrashPoint, Faults
from herald_shared.brand import BrandSettings
from herald_shared.internal_api import InternalToken
from herald_shared.settings import CommonSettings, LinkSecret, MetricsPort


def parse_limits(value: str) -> list[RateLimitItem]:
    """Parse a limits string ("10/minute;100/hour"); ValueError unless each amount is >= 1.

    Here, not in ``auth.ratelimit``: the settings check every HERALD_RATE_LIMIT_* at startup.
    """
    items = parse_many(value)
    if not items:
        raise ValueError(f"no rate limit in {value!r}")
    if any(item.amount < 1 for item in items):
        raise ValueError(f"a rate limit of 0 would refuse every attempt: {value!r}")
    return items


HASH_QUEUE_PER_WORKER = 4
"""Default waiting hashes per hash thread: an accepted request waits for at most 4 hashes
per thread before its own, about 5 x 35 ms on 2 cores (docs/api.md, "Overload")."""


class Settings(CommonSettings, BrandSettings):
    """The API's settings: ``CommonSettings`` (Redis, namespace, logs, metrics), the brand
    its link pages show (``BrandSettings``) and its own."""

    api_host: str = Field(default="127.0.0.1", description="Address `herald-api serve` binds.")
    api_port: int = Field(default=8000, description="Port `herald-api serve` listens on.")
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses or networks (or *) of the reverse proxies "
        "whose X-Forwarded-For and X-Forwarded-Proto `herald-api serve` believes (uvicorn's "
        "--forwarded-allow-ips). The client address the rate limits count comes from there.",
    )
    keep_alive_seconds: int = Field(
        default=75,
        gt=5,
        description="How long `herald-api serve` keeps an idle HTTP connection open. Longer "
        "than any client's or proxy's idle timeout (httpx 5 s, load balancers often 60 s): a "
        "server that closes first races the client's next request on that connection.",
    )
    database_url: PostgresDsn = Field(
        default=PostgresDsn("postgresql+asyncpg://postgres@127.0.0.1:5432/herald"),
        description="PostgreSQL URL of the accounts database (postgresql:// or "
        "postgresql+asyncpg://). `herald-api migrate` creates the database if missing.",
    )
    database_pool_size: int = Field(default=10, ge=1, description="Connections kept open.")
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="`transaction` when HERALD_DATABASE_URL points at a transaction-mode "
        "pooler (PgBouncer pool_mode=transaction): every prepared-statement cache is off and "
        "each statement gets a unique name, since consecutive transactions of one connection "
        "may run on different server connections (PgBouncer before 1.21 does not track "
        "prepared statements). Migrations then need HERALD_MIGRATION_DATABASE_URL.",
    )
    migration_database_url: PostgresDsn | None = Field(
        default=None,
        description="Direct PostgreSQL URL `herald-api migrate` uses (never a pooler: it "
        "creates the database and holds one transaction for the whole migration). Unset: "
        "HERALD_DATABASE_URL, which is refused when HERALD_DATABASE_POOLER=transaction.",
    )
    database_max_overflow: int = Field(
        default=10,
        ge=0,
        description="Connections opened beyond the pool size while it is all in use (closed "
        "again when returned); pool size + overflow is the most this process opens.",
    )
    database_pool_timeout_seconds: float = Field(
        default=0.025,
        ge=0,
        description="How long a request waits for a pooled connection when every one is in "
        "use before it is shed: 503 with Retry-After (admission control; 0: no wait).",
    )
    database_connect_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long opening a database connection may take before the request "
        "gets a 503 (asyncpg's own default is 60 s).",
    )
    hash_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads hashing passwords (argon2id is CPU-bound; default: CPU count).",
    )
    hash_queue_depth: int = Field(
        default_factory=lambda data: HASH_QUEUE_PER_WORKER * data["hash_workers"],
        ge=0,
        description="Password hashes that may wait for a hash thread (default: 4 per "
        "HERALD_HASH_WORKERS). A request needing a hash past them is shed at once: 503 "
        "with Retry-After (admission control).",
    )
    argon2_memory_kib: int = Field(
        default=19_456, ge=19_456, description="argon2id memory cost (OWASP minimum: 19 MiB)."
    )
    argon2_time_cost: int = Field(
        default=2, ge=2, description="argon2id iterations (OWASP minimum: 2)."
    )
    argon2_parallelism: int = Field(default=1, ge=1, description="argon2id lanes.")
    jwt_secret: SecretStr = Field(
        min_length=32,
        description="HMAC-SHA256 key that signs the access tokens (JWT) of POST /api/v1/auth/"
        "token. Required, at least 32 characters, e.g. `openssl rand -base64 48`. Whoever "
        "holds it can act as any user; changing it logs every user out.",
    )
    access_token_ttl_seconds: int = Field(
        default=900,
        ge=60,
        le=86_400,
        description="How long an access token is valid. Logging out or ending a session "
        "stops its access tokens at once (one primary-key lookup per request).",
    )
    session_idle_days: int = Field(
        default=30,
        ge=1,
        le=365,
        description="A session whose refresh token was not used for this many days has "
        "expired (logging in again starts a new one).",
    )
    session_max_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="A session expires this many days after its login, however often it "
        "is refreshed.",
    )
    refresh_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description="For how long after a refresh the refresh token it replaced is still "
        "accepted (once more, for two concurrent refreshes of one client); presented "
        "later, it ends the session as a reuse.",
    )
    enqueue_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a signup waits for Redis to accept its welcome email before "
        "logging the failure and answering anyway.",
    )
    # Not the API's own port: counts of signups by outcome must not be public, or they
    # would tell whether an address has an account.
    metrics_port: MetricsPort = 9100
    readiness_timeout_seconds: float = Field(
        default=2.0, gt=0, description="How long /health/ready waits for each dependency."
    )
    rate_limits_enabled: bool = Field(
        default=True,
        description="Anti-automation rate limits on signups, logins, verification resends, "
        "password resets and refreshes (429 with Retry-After). Off only for benchmarks and "
        "load tests.",
    )
    rate_limit_signup_per_client: str = Field(
        default="10/minute;100/hour",
        description="Signups one client address may attempt (limits notation, ';' between "
        "limits: each must hold).",
    )
    rate_limit_signup_per_email: str = Field(
        default="5/hour;20/day",
        description="Signups one email address may be the subject of (each may email it).",
    )
    rate_limit_login_per_client: str = Field(
        default="30/minute;300/hour", description="Logins one client address may attempt."
    )
    rate_limit_login_per_email: str = Field(
        default="10/15minutes;100/day", description="Logins one account may be the target of."
    )
    rate_limit_resend_per_client: str = Field(
        default="10/hour", description="Verification resends one client address may ask for."
    )
    rate_limit_resend_per_email: str = Field(
        default="3/hour;10/day", description="Verification resends one email address may get."
    )
    rate_limit_password_reset_per_client: str = Field(
        default="10/hour",
        description="Password reset requests and resets one client address may attempt.",
    )
    rate_limit_password_reset_per_email: str = Field(
        default="3/hour;10/day", description="Password reset emails one address may be sent."
    )
    rate_limit_refresh_per_client: str = Field(
        default="120/minute",
        description="Refreshes one client address may attempt (known or unknown tokens; "
        "many users may share one address behind a NAT).",
    )
    rate_limit_refresh_per_session: str = Field(
        default="10/minute;60/hour",
        description="Refreshes of one session (a client refreshes about every 15 minutes).",
    )
    rate_limit_timeout_seconds: float = Field(
        default=0.25,
        gt=0,
        description="How long a rate-limit check may wait for Redis before the attempt is "
        "let through unchecked (fail open; Redis is tried again a second later).",
    )
    outbox_batch_size: int = Field(
        default=200,
        ge=1,
        description="Outbox rows the relay claims and pushes per pass, and rows the "
        "reconciliation checks per batch.",
    )
    outbox_poll_seconds: float = Field(
        default=0.5, gt=0, description="How long the relay sleeps when nothing is due."
    )
    outbox_max_backoff_seconds: float = Field(
        default=1.0,
        ge=0.1,
        description="Cap of the relay's exponential backoff (from 0.1 s) while Redis or "
        "PostgreSQL fails, and of each failed row's retry delay.",
    )
    outbox_fast_path_grace_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a new outbox row is left to the signup's own push before "
        "the relay may take it.",
    )
    internal_token: InternalToken = Field(
        default=None,
        description="Bearer token of the internal endpoints (/internal/v1, called by the "
        "scheduler); at least 16 characters. Unset: those endpoints answer 404.",
    )
    link_secret: LinkSecret
    verification_link_hours: int = Field(
        default=48,
        ge=1,
        le=24 * 30,
        description="How long an email verification link works.",
    )
    password_reset_link_minutes: int = Field(
        default=60,
        ge=5,
        le=24 * 60,
        description="How long a password reset link works (short: whoever holds it can take "
        "over the account).",
    )
    idempotency_key_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 7,
        description="How long a POST that sends email, sent with an Idempotency-Key, is "
        "remembered: a repeat with the same key and body within it gets the first answer "
        "again and sends nothing (docs/api.md).",
    )
    idempotency_wait_seconds: float = Field(
        default=2.0,
        gt=0,
        le=30,
        description="How long a request waits for another one with the same Idempotency-Key "
        "still in its transaction before it is answered 409 (retry later).",
    )
    fault_exit_after_commit: bool = Field(
        default=False,
        description="For fault tests only: a signup ends the process (exit status 70) right "
        "after its commit, before pushing its welcome email, like a crash there (the same "
        "as HERALD_API_CRASH_AT=after_commit).",
    )
    api_crash_at: CrashPoint | None = Field(
        default=None,
        description="For crash tests only: the API process ends at once (exit status 70, no "
        "cleanup) the first time it reaches this point of a message's life (the list: "
        "herald_api.core.faults). Unset: never.",
    )

    @field_validator(
        "rate_limit_signup_per_client",
        "rate_limit_signup_per_email",
        "rate_limit_login_per_client",
        "rate_limit_login_per_email",
        "rate_limit_resend_per_client",
        "rate_limit_resend_per_email",
        "rate_limit_password_reset_per_client",
        "rate_limit_password_reset_per_email",
        "rate_limit_refresh_per_client",
        "rate_limit_refresh_per_session",
    )
    @classmethod
    def _valid_rate_limits(cls, value: str, info: ValidationInfo) -> str:
        # At startup, naming the variable: a typo must not surface as a 500 at the first signup.
        try:
            parse_limits(value)
        except ValueError:
            raise ValueError(
                f"HERALD_{(info.field_name or '').upper()} must be rate limits like "
                f"'10/minute;100/hour' (an amount >= 1 per second, minute, hour, day, month "
                f"or year, optionally '/15minutes')"
            ) from None
        return value

    @field_validator("database_url", "migration_database_url", mode="after")
    @classmethod
    def _use_asyncpg(cls, url: PostgresDsn | None) -> PostgresDsn | None:
        if url is not None and url.scheme in {"postgresql", "postgres"}:
            return PostgresDsn(str(url).replace(f"{url.scheme}://", "postgresql+asyncpg://", 1))
        return url

    @model_validator(mode="after")
    def _migrations_bypass_the_pooler(self) -> Self:
        if self.database_pooler == "transaction" and self.migration_database_url is None:
            raise ValueError(
                "HERALD_DATABASE_POOLER=transaction needs HERALD_MIGRATION_DATABASE_URL: "
                "migrations connect to PostgreSQL directly, never through the pooler"
            )
        return self

    @property
    def faults(self) -> Faults:
        """The process's fault switch (crash tests only)."""
        if self.api_crash_at is not None:
            return Faults(self.api_crash_at)
        return Faults("after_commit" if self.fault_exit_after_commit else None)

    @field_validator("api_crash_at", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes an unset variable through as "".
        return None if value == "" else value

    @property
    def sqlalchemy_url(self) -> str:
        return str(self.database_url)

    @property
    def migration_url(self) -> str:
        """Where ``herald-api migrate`` connects: PostgreSQL itself, never a pooler."""
        return str(self.migration_database_url or self.database_url)


@cache
def get_settings() -> Settings:
    return Settings()

"""The API's internal HTTP contract: what the scheduler calls and the API serves.

The API is the only writer of the accounts database, so the periodic work on
it runs there; the scheduler only decides when, and asks over HTTP with a
shared bearer token (``HERALD_INTERNAL_TOKEN``). Both sides build on this
module, so the paths, the bodies and their bounds cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, SecretStr

__all__ = [
    "AUTHORIZATION",
    "ENDPOINTS",
    "MAX_AGE_SECONDS",
    "MIN_AGE_SECONDS",
    "PREFIX",
    "PURGE_IDEMPOTENCY_KEYS",
    "PURGE_OUTBOX",
    "PURGE_SESSIONS",
    "PURGE_TOKENS",
    "PURGE_UNVERIFIED_USERS",
    "RECONCILE_OUTBOX",
    "REMIND_UNVERIFIED_USERS",
    "SCHEME",
    "TOKEN_MIN_LENGTH",
    "AgeSeconds",
    "Deleted",
    "Endpoint",
    "InternalToken",
    "OlderThan",
    "Reconciled",
    "Reminded",
    "authorization",
]

PREFIX = "/internal/v1"
"""Where every internal endpoint lives."""

AUTHORIZATION = "Authorization"
SCHEME = "Bearer"
"""The auth scheme: ``Authorization: Bearer <HERALD_INTERNAL_TOKEN>``."""

TOKEN_MIN_LENGTH = 16
"""The shortest internal token either side accepts."""

MIN_AGE_SECONDS = 60
"""The smallest ``older_than_seconds``: no job acts on rows younger than a minute."""

MAX_AGE_SECONDS = 100 * 365 * 24 * 3600
"""The largest ``older_than_seconds`` (100 years): far past any retention, and
``now() - interval`` stays a timestamp PostgreSQL has."""

AgeSeconds = Annotated[int, Field(ge=MIN_AGE_SECONDS, le=MAX_AGE_SECONDS)]
"""An age in seconds the internal endpoints accept; the scheduler's settings use it
too, so a value the API would refuse is refused at startup instead."""


def _empty_is_unset(value: object) -> object:
    # Compose passes an unset variable through as "", which means "no token".
    return None if value == "" else value


InternalToken = Annotated[
    Annotated[SecretStr, Field(min_length=TOKEN_MIN_LENGTH)] | None,
    BeforeValidator(_empty_is_unset),
]
"""``HERALD_INTERNAL_TOKEN`` as both services read it: unset or empty is ``None``."""


def authorization(token: SecretStr) -> dict[str, str]:
    """The header that authenticates a call to the internal endpoints."""
    return {AUTHORIZATION: f"{SCHEME} {token.get_secret_value()}"}


class OlderThan(BaseModel):
    """The body of every internal endpoint."""

    older_than_seconds: AgeSeconds = Field(
        description="The age, in seconds, past which the rows concerned are acted on."
    )

    @property
    def age(self) -> timedelta:
        return timedelta(seconds=self.older_than_seconds)


class Deleted(BaseModel):
    """What a purge answers."""

    deleted: int = Field(description="Rows deleted.")


class Reminded(BaseModel):
    """What the reminder answers."""

    reminded: int = Field(description="Users sent a reminder.")


class Reconciled(BaseModel):
    """What one outbox reconciliation did: rows by outcome, and the oldest unsettled row."""

    delivered: int = Field(description="Rows settled: their message was sent.")
    skipped: int = Field(
        description="Rows settled: their job completed without sending (its link had expired)."
    )
    dead: int = Field(description="Rows settled as dead: their message is a dead letter.")
    waiting: int = Field(description="Rows whose job will still run: checked again later.")
    repushed: int = Field(description="Rows whose message Redis had lost: pushed again.")
    oldest_unsettled_seconds: float = Field(
        description="Age of the oldest row whose delivery is not confirmed yet (0: none)."
    )


Answer = TypeVar("Answer", bound=BaseModel)


@dataclass(frozen=True)
class Endpoint(Generic[Answer]):
    """One internal endpoint: ``POST PREFIX + path`` with an ``OlderThan`` body,
    answered with an ``answer``."""

    path: str
    """The path under ``PREFIX`` (the API's router adds the prefix)."""
    answer: type[Answer]

    @property
    def url(self) -> str:
        """The full path, as a client posts to it."""
        return PREFIX + self.path


RECONCILE_OUTBOX = Endpoint("/outbox/reconcile", Reconciled)
"""Check unsettled outbox rows in Redis: settle, push again, or wait."""
PURGE_OUTBOX = Endpoint("/outbox/purge", Deleted)
"""Delete outbox rows settled longer ago than the age."""
REMIND_UNVERIFIED_USERS = Endpoint("/users/remind-unverified", Reminded)
"""Remind once each user still unverified the age after signup."""
PURGE_UNVERIFIED_USERS = Endpoint("/users/purge-unverified", Deleted)
"""Delete accounts still unverified the age after signup, with their tokens."""
PURGE_TOKENS = Endpoint("/tokens/purge", Deleted)
"""Delete link tokens spent or expired longer ago than the age."""
PURGE_IDEMPOTENCY_KEYS = Endpoint("/idempotency-keys/purge", Deleted)
"""Delete idempotency keys expired longer ago than the age."""
PURGE_SESSIONS = Endpoint("/sessions/purge", Deleted)
"""Delete login sessions ended (revoked, expired, or idle too long) longer ago than the age."""

ENDPOINTS: tuple[Endpoint[Any], ...] = (
    RECONCILE_OUTBOX,
    PURGE_OUTBOX,
    REMIND_UNVERIFIED_USERS,
    PURGE_UNVERIFIED_USERS,
    PURGE_TOKENS,
    PURGE_IDEMPOTENCY_KEYS,
    PURGE_SESSIONS,
)

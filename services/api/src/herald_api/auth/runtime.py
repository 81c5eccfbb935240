"""What auth holds open for the API's lifetime: the hasher's threads, the rate limiter's
Redis pool, the token codec, and the login and session services built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from herald_api.auth.login import LoginService
from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.ratelimit import RateLimiter
from herald_api.auth.sessions import SessionPolicy, SessionService
from herald_api.auth.tokens import AccessTokens
from herald_api.core.infrastructure import Infrastructure
from herald_api.outbox import Outbox

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Auth:
    hasher: PasswordHasher
    rate_limiter: RateLimiter
    tokens: AccessTokens
    login: LoginService
    login_sessions: SessionService


@asynccontextmanager
async def open_auth(infrastructure: Infrastructure, outbox: Outbox) -> AsyncIterator[Auth]:
    """Build auth's parts from the settings (sessions stage their reuse emails in
    ``outbox``); close the hasher and the limiter when closing."""
    settings = infrastructure.settings
    hasher = PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        workers=settings.hash_workers,
        queue_depth=settings.hash_queue_depth,
    )
    rate_limiter = RateLimiter.from_settings(settings)
    if not settings.rate_limits_enabled:
        log.warning(
            "rate_limit.disabled",
            setting="HERALD_RATE_LIMITS_ENABLED",
            effect="signups, logins, verification resends, password resets and refreshes "
            "are not rate limited",
        )
    tokens = AccessTokens.from_settings(settings)
    login_sessions = SessionService(
        sessions=infrastructure.sessions,
        tokens=tokens,
        policy=SessionPolicy.from_settings(settings),
        dispatcher=outbox.dispatcher,
    )
    try:
        yield Auth(
            hasher=hasher,
            rate_limiter=rate_limiter,
            tokens=tokens,
            login=LoginService(
                sessions=infrastructure.sessions, hasher=hasher, login_sessions=login_sessions
            ),
            login_sessions=login_sessions,
        )
    finally:
        hasher.close()
        await rate_limiter.close()

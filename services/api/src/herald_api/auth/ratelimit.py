"""Anti-automation rate limits (OWASP ASVS 5.0 2.4.1) on signups, logins, resends and
password resets: each attempt counts per client address and per email address, in Redis
(shared by every replica), and is let through when Redis fails (fail open).

docs/rate-limits.md says why each choice: the two scopes, hashed addresses, IPv6 /64,
the moving window, the order of counting, and availability over enforcement.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from collections.abc import Mapping
from typing import Literal, get_args

import structlog
from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herald_api.core.errortext import describe
from herald_api.core.settings import Settings, parse_limits
from herald_shared.queues import queue_name
from herald_shared.redis_client import RedisTarget, redis_client

log = structlog.get_logger(__name__)

Action = Literal["signup", "login", "resend", "password_reset"]
Scope = Literal["client", "email"]
FailOpenReason = Literal["timeout", "redis", "paused", "other"]

ACTIONS: tuple[Action, ...] = get_args(Action)
SCOPES: tuple[Scope, ...] = get_args(Scope)

PAUSE_AFTER_FAILURE_SECONDS = 1.0
"""After Redis failed a check, how long checks are skipped (let through) before one probes."""

KEY_NAME = "ratelimit"
"""Base of every key's prefix, inside the deployment's namespace (``<namespace>:ratelimit``)."""

RATE_LIMITED = Counter(
    "herald_api_rate_limited_total",
    "Attempts refused with 429 by a rate limit (logged as rate_limit.exceeded), by action "
    "(signup, login, resend) and by the scope of the limit that refused (client, email).",
    ["action", "scope"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "herald_api_rate_limit_fail_open_total",
    "Attempts let through without a rate-limit check, by action and reason: timeout or "
    "redis (the check failed; logged as rate_limit.unavailable), paused (skipped for a "
    "second after such a failure), other (a bug). Any increase means limits are off.",
    ["action", "reason"],
)

for _action in ACTIONS:
    # Export 0 before the first event, so rate() and alerts see the series at once.
    for _scope in SCOPES:
        RATE_LIMITED.labels(_action, _scope)
    for _reason in get_args(FailOpenReason):
        RATE_LIMIT_FAIL_OPEN.labels(_action, _reason)


class RateLimitedError(Exception):
    """An attempt over one of its action's limits; the route answers 429."""

    def __init__(self, *, action: Action, scope: Scope, limit: str, retry_after: int) -> None:
        super().__init__(f"{action} limit per {scope} ({limit}) exceeded; retry in {retry_after} s")
        self.action: Action = action
        self.scope: Scope = scope
        self.limit = limit
        """The limit that refused, as limits describes it ("5 per 1 hour")."""
        self.retry_after = retry_after
        """Whole seconds until that limit has room again; at least 1."""


def client_bucket(address: str) -> str:
    """What the per-client limit counts: the address itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def email_digest(email: str) -> str:
    """The key part standing for ``email``: SHA-256 of the trimmed, case-folded address.

    Case-folded so that ``Alice@Example.com`` and ``alice@example.com`` share
    one budget instead of letting an attacker multiply it by varying case.
    """
    return hashlib.sha256(email.strip().casefold().encode()).hexdigest()


def storage_uri(redis_url: str) -> str:
    """limits' async storage URI for a redis-py URL (``redis://`` → ``async+redis://``)."""
    if redis_url.startswith("unix://"):
        return "async+redis+unix://" + redis_url.removeprefix("unix://")
    return f"async+{redis_url}"


class RateLimiter:
    """Counts attempts per action, client and email address in Redis (docs/rate-limits.md)."""

    def __init__(
        self,
        *,
        redis: RedisTarget | str,
        namespace: str,
        limits: Mapping[tuple[Action, Scope], str],
        timeout_seconds: float,
        enabled: bool = True,
    ) -> None:
        """``redis``: a target (``settings.redis_target``, Sentinels included) or a URL.
        ``limits``: each (action, scope) and its limits string; every pair must be given.

        Nothing connects until the first check, so an API whose Redis is down
        still starts. limits runs its scripts on the pool of Herald's one Redis
        client (``herald_shared.redis_client``), so the counts follow the same
        master, Sentinels and TLS as the queues (docs/operations.md, "Redis").
        """
        self.enabled = enabled
        self.timeout_seconds = timeout_seconds
        self.limits: dict[tuple[Action, Scope], list[RateLimitItem]] = {}
        for action in ACTIONS:
            for scope in SCOPES:
                # The action in the item's namespace keeps each action's keys apart.
                self.limits[action, scope] = [
                    type(item)(item.amount, item.multiples, namespace=action)
                    for item in parse_limits(limits[action, scope])
                ]
        target = RedisTarget(redis) if isinstance(redis, str) else redis
        # No retries: the deadline is short, and a failed check is let through anyway.
        # With Sentinels, the client's one retry on a connection a failover closed
        # stays (within the same deadline), so a failover lets no check through.
        retry = {} if target.sentinels else {"retry": Retry(NoBackoff(), 0)}
        self._redis = redis_client(
            target,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            **retry,
        )
        self._storage = RedisStorage(
            # With a pool given, limits reads only the scheme of its URI.
            storage_uri(target.url),
            implementation="redispy",
            key_prefix=queue_name(KEY_NAME, namespace=namespace),
            # limits types its options as scalars:
            connection_pool=self._redis.connection_pool,  # type: ignore[arg-type]
        )
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._paused_until = 0.0
        self._failing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """The limiter ``settings`` describe (``HERALD_RATE_LIMIT_*``), on the API's Redis."""
        return cls(
            redis=settings.redis_target,
            namespace=settings.queue_namespace,
            limits={
                ("signup", "client"): settings.rate_limit_signup_per_client,
                ("signup", "email"): settings.rate_limit_signup_per_email,
                ("login", "client"): settings.rate_limit_login_per_client,
                ("login", "email"): settings.rate_limit_login_per_email,
                ("resend", "client"): settings.rate_limit_resend_per_client,
                ("resend", "email"): settings.rate_limit_resend_per_email,
                ("password_reset", "client"): settings.rate_limit_password_reset_per_client,
                ("password_reset", "email"): settings.rate_limit_password_reset_per_email,
            },
            timeout_seconds=settings.rate_limit_timeout_seconds,
            enabled=settings.rate_limits_enabled,
        )

    async def check(self, action: Action, *, client: str, email: str | None = None) -> None:
        """Count one ``action`` attempt by ``client`` (and for ``email``, if given).

        Raises RateLimitedError if the per-client or the per-email limit of
        ``action`` refuses it. Lets the attempt through when rate limits are
        disabled, or when Redis fails or is slow (fail open).
        """
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._paused_until:
            RATE_LIMIT_FAIL_OPEN.labels(action, "paused").inc()
            return
        if self._failing:
            # This request probes Redis; the others keep skipping until it knows.
            self._paused_until = now + self.timeout_seconds
        try:
            async with asyncio.timeout(self.timeout_seconds):
                refused = await self._hit(action, client=client, email=email)
        except Exception as exc:
            self._fail_open(action, exc)
            return
        if self._failing:
            self._failing = False
            self._paused_until = 0.0
            log.info("rate_limit.recovered")
        if refused is not None:
            RATE_LIMITED.labels(refused.action, refused.scope).inc()
            # The client address, not the email: it is what an operator blocks,
            # and the request log does not carry it. Email addresses stay out of
            # logs (a digest of one is easily reversed by hashing candidates).
            log.warning(
                "rate_limit.exceeded",
                action=refused.action,
                scope=refused.scope,
                limit=refused.limit,
                retry_after=refused.retry_after,
                client=client_bucket(client),
            )
            raise refused

    async def _hit(
        self, action: Action, *, client: str, email: str | None
    ) -> RateLimitedError | None:
        """Count the attempt limit by limit; the error of the first limit that refuses."""
        targets: list[tuple[Scope, str]] = [("client", client_bucket(client))]
        if email is not None:
            targets.append(("email", email_digest(email)))
        for scope, identity in targets:
            for item in self.limits[action, scope]:
                if not await self._strategy.hit(item, scope, identity):
                    stats = await self._strategy.get_window_stats(item, scope, identity)
                    wait = math.ceil(stats.reset_time - time.time())
                    return RateLimitedError(
                        action=action,
                        scope=scope,
                        limit=str(item),
                        retry_after=min(max(wait, 1), item.get_expiry()),
                    )
        return None

    def _fail_open(self, action: Action, exc: Exception) -> None:
        self._failing = True
        self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        reason: FailOpenReason
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            reason = "timeout"
        elif isinstance(exc, RedisError | OSError):
            reason = "redis"
        else:
            reason = "other"
        RATE_LIMIT_FAIL_OPEN.labels(action, reason).inc()
        log.warning(
            "rate_limit.unavailable",
            action=action,
            reason=reason,
            error=describe(exc),
            effect=f"attempts are not rate limited; Redis is tried again in "
            f"{PAUSE_AFTER_FAILURE_SECONDS:g} s",
            # A bug, not an outage: keep its traceback.
            exc_info=reason == "other",
        )

    async def close(self) -> None:
        """Close the connections to Redis."""
        try:
            await self._redis.aclose()
        except (RedisError, OSError) as exc:
            # Shutting down while Redis is unreachable must still shut down.
            log.warning("rate_limit.close_failed", error=describe(exc))

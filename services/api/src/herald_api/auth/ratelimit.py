"""Anti-automation rate limits (OWASP ASVS 5.0 2.4.1) on signups, logins, resends and
password resets.

Each attempt counts against two independent limits of its action: one per
client address and, when the request names one, one per email address. The
first stops one source from trying many addresses (credential stuffing, mass
signups); the second stops many sources from hammering one address (password
guessing from a botnet, mail-bombing a victim with resends or "account
exists" emails). Over either limit the route answers 429 with Retry-After.

Counts live in Redis (``HERALD_REDIS_URL``) so every API replica shares them,
under keys prefixed with ``HERALD_QUEUE_NAMESPACE`` so deployments and test
runs sharing one Redis never see each other's counts. Email addresses are
hashed (SHA-256 of the case-folded address) before they become part of a key:
key names show up in ``SCAN``, ``MONITOR``, slow logs and dashboards, and an
address has no business there. IPv6 clients are counted per /64, the block a
single subscriber is usually given; otherwise one user would hold 2^64
separate budgets.

Strategy: limits' moving window. It keeps one timestamp per counted attempt
(at most ``limit`` entries per key; our largest limit is a few hundred), so it
is exact: the N+1th attempt inside any window of the configured length is
refused, with no burst of 2N across a fixed window's boundary, and no
sliding-window-counter approximation that can refuse early or late. Its
window stats give the exact moment the oldest attempt leaves the window,
which is an honest Retry-After. The cost is memory proportional to the limit
and timestamps taken from each replica's clock (NTP keeps those within
milliseconds, far below windows of minutes).

Attempts are counted per-client first, then per-email, and counting stops at
the first limit that refuses: a source that is over its own limit cannot keep
using up a victim's per-email budget with requests that were refused anyway.

Availability over enforcement. A rate limit protects against abuse; losing it
for a while costs far less than refusing every signup and login because
Redis is down. So each check has a short deadline
(``HERALD_RATE_LIMIT_TIMEOUT_SECONDS``); when Redis fails or is too slow the
attempt is let through (fail open), logged as ``rate_limit.unavailable`` and
counted in ``herald_api_rate_limit_fail_open_total``. After a failure the
limiter is skipped for ``PAUSE_AFTER_FAILURE_SECONDS``, then one request
probes Redis again while the others still skip: during an outage requests pay
the timeout about once a second instead of on every call, and no pile of
reconnect attempts competes with the database driver for the event loop's
thread pool (see ``herald_api.dispatch``). The price: during an outage, and
for up to a second after it, attempts are not limited at all. Alert on the
fail-open counter.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Literal, get_args

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from herald_api.core.errortext import describe
from herald_api.core.metrics import RATE_LIMIT_FAIL_OPEN, RATE_LIMITED
from herald_shared.queues import queue_name

if TYPE_CHECKING:
    from herald_api.core.settings import Settings

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

UNKNOWN_CLIENT = "unknown"
"""The client address of a request whose transport gave none (all such requests share it)."""

RATE_LIMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    HTTPStatus.TOO_MANY_REQUESTS.value: {
        "description": "Too many attempts from this client address or for this email "
        "address; try again after Retry-After seconds.",
        "headers": {
            "Retry-After": {
                "description": "Seconds until the limit that refused has room again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
    }
}
"""The answer of every route that checks a rate limit, for its ``responses=``
(``herald_api.api.errors`` turns RateLimitedError into it)."""

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


def parse_limits(value: str) -> list[RateLimitItem]:
    """Parse a limits string ("10/minute;100/hour"); ValueError unless each amount is >= 1."""
    items = parse_many(value)
    if not items:
        raise ValueError(f"no rate limit in {value!r}")
    if any(item.amount < 1 for item in items):
        raise ValueError(f"a rate limit of 0 would refuse every attempt: {value!r}")
    return items


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
    """Counts attempts per action, client and email address in Redis; see the module doc."""

    def __init__(
        self,
        *,
        redis_url: str,
        namespace: str,
        limits: Mapping[tuple[Action, Scope], str],
        timeout_seconds: float,
        enabled: bool = True,
    ) -> None:
        """``limits``: each (action, scope) and its limits string; every pair must be given.

        Nothing connects until the first check, so an API whose Redis is down
        still starts.
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
        self._pool = ConnectionPool.from_url(
            redis_url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            # No retries: the deadline is short, and a failed check is let through anyway.
            retry=Retry(NoBackoff(), 0),
        )
        self._storage = RedisStorage(
            storage_uri(redis_url),
            implementation="redispy",
            key_prefix=queue_name(KEY_NAME, namespace=namespace),
            connection_pool=self._pool,  # type: ignore[arg-type]  # options are typed as scalars
        )
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._paused_until = 0.0
        self._failing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        """The limiter ``settings`` describe (``HERALD_RATE_LIMIT_*``), on the API's Redis."""
        return cls(
            redis_url=settings.redis_url,
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
        disabled, or when Redis fails or is slow (see the module doc).
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
            await self._pool.aclose()
        except (RedisError, OSError) as exc:
            # Shutting down while Redis is unreachable must still shut down.
            log.warning("rate_limit.close_failed", error=describe(exc))

"""Anti-automation rate limits (OWASP ASVS 5.0 2.4.1) on signups, logins, resends,
password resets and refreshes: each attempt counts per client address and per its
subject (the email address, or for a refresh the session), in Redis (shared by every
replica), and is let through when Redis fails (fail open).

docs/rate-limits.md says why each choice: the scopes of each action, hashed addresses,
IPv6 /64, the moving window, the order of counting, and availability over enforcement.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import math
import time
import uuid
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

Action = Literal["signup", "login", "resend", "password_reset", "refresh"]
Scope = Literal["client", "email", "session"]
FailOpenReason = Literal["timeout", "redis", "paused", "other"]

ACTIONS: tuple[Action, ...] = get_args(Action)
SCOPES: tuple[Scope, ...] = get_args(Scope)

ACTION_SCOPES: Mapping[Action, tuple[Scope, ...]] = {
    "signup": ("client", "email"),
    "login": ("client", "email"),
    "resend": ("client", "email"),
    "password_reset": ("client", "email"),
    "refresh": ("client", "session"),
}
"""The scopes each action is counted in, in counting order: always the client first."""

PAIRS: tuple[tuple[Action, Scope], ...] = tuple(
    (action, scope) for action in ACTIONS for scope in ACTION_SCOPES[action]
)
"""Every (action, scope) that has a limit: ``HERALD_RATE_LIMIT_<ACTION>_PER_<SCOPE>``."""

PAUSE_AFTER_FAILURE_SECONDS = 1.0
"""After Redis failed a check, how long checks are skipped (let through) before one probes."""

KEY_NAME = "ratelimit"
"""Base of every key's prefix, inside the deployment's namespace (``<namespace>:ratelimit``)."""

RATE_LIMITED = Counter(
    "herald_api_rate_limited_total",
    "Attempts refused with 429 by a rate limit (logged as rate_limit.exceeded), by action "
    "(signup, login, resend, password_reset, refresh) and by the scope of the limit that "
    "refused (client; email, or session for refresh).",
    ["action", "scope"],
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "herald_api_rate_limit_fail_open_total",
    "Rate-limit checks let through unchecked, by action and reason: timeout or "
    "redis (the check failed; logged as rate_limit.unavailable), paused (skipped for a "
    "second after such a failure), other (a bug). Any increase means limits are off.",
    ["action", "reason"],
)

# Export 0 before the first event, so rate() and alerts see the series at once; only
# for the pairs that exist, so no dashboard shows a series that can never move.
for _action, _scope in PAIRS:
    RATE_LIMITED.labels(_action, _scope)
for _action in ACTIONS:
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


def client_network(address: str) -> str | None:
    """The network a client address stands for: the IPv4 address (an IPv4-mapped IPv6
    one unwrapped), or the IPv6 /64 (one subscriber's); None if ``address`` is none.
    What the per-client limits count, and the coarse location a session keeps."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def client_bucket(address: str) -> str:
    """What the per-client limit counts: ``client_network``, or the address itself
    when it is not an IP address."""
    return client_network(address) or address


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


def _subject(
    action: Action, *, email: str | None, session: uuid.UUID | None
) -> tuple[Scope, str] | None:
    """The (scope, key identity) of an attempt's subject, checked against ``action``."""
    given: list[tuple[Scope, str]] = []
    if email is not None:
        given.append(("email", email_digest(email)))
    if session is not None:
        given.append(("session", str(session)))
    for scope, _ in given:
        if scope not in ACTION_SCOPES[action]:
            raise ValueError(f"the {action} action has no {scope} scope")
    if len(given) > 1:
        raise ValueError(f"one subject per {action} attempt, not {[s for s, _ in given]}")
    return given[0] if given else None


class RateLimiter:
    """Counts attempts per action, client and subject in Redis (docs/rate-limits.md)."""

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
        ``limits``: each (action, scope) of ``PAIRS`` and its limits string; every pair
        must be given, and no other.

        Nothing connects until the first check, so an API whose Redis is down
        still starts. limits runs its scripts on the pool of Herald's one Redis
        client (``herald_shared.redis_client``), so the counts follow the same
        master, Sentinels and TLS as the queues (docs/operations.md, "Redis").
        """
        missing = set(PAIRS) - set(limits)
        unknown = set(limits) - set(PAIRS)
        if missing or unknown:
            raise ValueError(
                f"rate limits must be given for exactly {sorted(PAIRS)}; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        self.enabled = enabled
        self.timeout_seconds = timeout_seconds
        self.limits: dict[tuple[Action, Scope], list[RateLimitItem]] = {
            # The action in the item's namespace keeps each action's keys apart.
            (action, scope): [
                type(item)(item.amount, item.multiples, namespace=action)
                for item in parse_limits(limits[action, scope])
            ]
            for action, scope in PAIRS
        }
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
                ("refresh", "client"): settings.rate_limit_refresh_per_client,
                ("refresh", "session"): settings.rate_limit_refresh_per_session,
            },
            timeout_seconds=settings.rate_limit_timeout_seconds,
            enabled=settings.rate_limits_enabled,
        )

    async def check(
        self,
        action: Action,
        *,
        client: str,
        email: str | None = None,
        session: uuid.UUID | None = None,
    ) -> None:
        """Count one ``action`` attempt by ``client``, then for its subject if given
        (``email``, or ``session``: whichever scope ``action`` has besides the client).

        Raises RateLimitedError if the per-client or the per-subject limit of
        ``action`` refuses it. Lets the attempt through when rate limits are
        disabled, or when Redis fails or is slow (fail open). Raises ValueError
        for a subject ``action`` has no scope for (a bug of the caller).
        """
        targets: list[tuple[Scope, str]] = [("client", client_bucket(client))]
        subject = _subject(action, email=email, session=session)
        if subject is not None:
            targets.append(subject)
        await self._check(action, targets, client=client, session=session)

    async def check_subject(
        self,
        action: Action,
        *,
        client: str,
        email: str | None = None,
        session: uuid.UUID | None = None,
    ) -> None:
        """Count one ``action`` attempt for its subject only: the second half of
        ``check``, for an action whose subject is known only after its per-client
        check (a refresh's session is looked up by its token). ``client`` is not
        counted again; it names the attempt in the log line of a refusal.

        Exactly one of ``email`` and ``session``; otherwise as ``check``.
        """
        subject = _subject(action, email=email, session=session)
        if subject is None:
            raise ValueError(f"check_subject({action!r}) needs a subject")
        await self._check(action, [subject], client=client, session=session)

    async def _check(
        self,
        action: Action,
        targets: list[tuple[Scope, str]],
        *,
        client: str,
        session: uuid.UUID | None,
    ) -> None:
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
                refused = await self._hit(action, targets)
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
            # A session id is no secret (the session logs carry it too).
            extra = {} if session is None else {"session_id": str(session)}
            log.warning(
                "rate_limit.exceeded",
                action=refused.action,
                scope=refused.scope,
                limit=refused.limit,
                retry_after=refused.retry_after,
                client=client_bucket(client),
                **extra,
            )
            raise refused

    async def _hit(
        self, action: Action, targets: list[tuple[Scope, str]]
    ) -> RateLimitedError | None:
        """Count the attempt limit by limit; the error of the first limit that refuses."""
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

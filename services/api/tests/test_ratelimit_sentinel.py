"""The rate limiter through a real Redis Sentinel: limits hold on the master, and still
hold after a failover (the counts were replicated; no check is let through)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald_api.auth.ratelimit import PAIRS, RateLimitedError, RateLimiter
from herald_shared.redis_client import RedisTarget, parse_sentinels
from herald_testing.ratelimits import let_through
from herald_testing.sentinel import MASTER_NAME, SentinelSet


@pytest.fixture
async def limiter(redis_sentinels: SentinelSet) -> AsyncIterator[RateLimiter]:
    chosen = dict.fromkeys(PAIRS, "1000/hour")
    chosen["login", "client"] = "2/minute"
    built = RateLimiter(
        redis=RedisTarget(
            url="redis://unused.invalid:1/0",
            sentinels=parse_sentinels(redis_sentinels.sentinels),
            master=MASTER_NAME,
        ),
        namespace="sentinel-test",
        limits=chosen,
        timeout_seconds=1.0,
    )
    yield built
    await built.close()


async def test_the_limit_holds_through_a_failover(
    limiter: RateLimiter, redis_sentinels: SentinelSet
) -> None:
    before = let_through("login")
    for _ in range(2):
        await limiter.check("login", client="203.0.113.7")
    with pytest.raises(RateLimitedError):
        await limiter.check("login", client="203.0.113.7")

    redis_sentinels.failover()

    with pytest.raises(RateLimitedError):
        await limiter.check("login", client="203.0.113.7")
    await limiter.check("login", client="203.0.113.8")
    assert let_through("login") == before

"""The rate limiter on a real Redis: exact limits, separate scopes, shared counts, failing open."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pydantic import ValidationError
from structlog.testing import capture_logs

from herald_api.auth.ratelimit import (
    ACTION_SCOPES,
    ACTIONS,
    PAIRS,
    PAUSE_AFTER_FAILURE_SECONDS,
    RATE_LIMITED,
    Action,
    RateLimitedError,
    RateLimiter,
    client_bucket,
)
from herald_api.core.settings import Settings
from herald_testing.ports import free_port

GENEROUS = "1000/hour"

MakeLimiter = Callable[..., RateLimiter]


def limits(**overrides: str) -> dict[tuple[Action, Any], str]:
    """Every (action, scope) at ``GENEROUS`` but those given as ``signup_email="2/minute"``."""
    chosen = dict.fromkeys(PAIRS, GENEROUS)
    for name, value in overrides.items():
        action, scope = name.rsplit("_", 1)
        assert (action, scope) in chosen, name
        chosen[action, scope] = value  # type: ignore[index]
    return chosen


def with_port(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port`` (credentials and database kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def fail_open_count(action: Action, reason: str) -> float:
    labels = {"action": action, "reason": reason}
    return REGISTRY.get_sample_value("herald_api_rate_limit_fail_open_total", labels) or 0.0


@pytest.fixture
async def make_limiter(redis_url: str, queue_namespace: str) -> AsyncIterator[MakeLimiter]:
    """Build limiters on the test's Redis and namespace (overridable); all closed afterwards."""
    built: list[RateLimiter] = []

    def make(**overrides: Any) -> RateLimiter:
        options: dict[str, Any] = {
            "redis": redis_url,
            "namespace": queue_namespace,
            "limits": limits(),
            "timeout_seconds": 0.25,
        }
        limiter = RateLimiter(**(options | overrides))
        built.append(limiter)
        return limiter

    yield make
    for limiter in built:
        await limiter.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def allowed(limiter: RateLimiter, action: Action, count: int, **who: Any) -> None:
    for _ in range(count):
        await limiter.check(action, **who)


async def test_the_n_plus_first_attempt_is_refused_with_its_limit_and_a_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limits=limits(signup_client="3/minute"))

    await allowed(limiter, "signup", 3, client="203.0.113.7", email="ada@example.com")
    with capture_logs() as logs, pytest.raises(RateLimitedError) as refused:
        await limiter.check("signup", client="203.0.113.7", email="ada@example.com")

    assert (refused.value.action, refused.value.scope) == ("signup", "client")
    assert refused.value.limit == "3 per 1 minute"
    assert 1 <= refused.value.retry_after <= 60
    [line] = [line for line in logs if line["event"] == "rate_limit.exceeded"]
    assert line["log_level"] == "warning"
    assert (line["action"], line["scope"], line["client"]) == ("signup", "client", "203.0.113.7")
    assert "ada@example.com" not in repr(logs)


async def test_every_limit_of_a_scope_holds(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(login_client="5/minute;2/hour"))

    await allowed(limiter, "login", 2, client="203.0.113.7")
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("login", client="203.0.113.7")

    assert refused.value.limit == "2 per 1 hour"
    assert 1 <= refused.value.retry_after <= 3600


async def test_the_per_email_limit_counts_across_client_addresses(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limits=limits(login_email="2/minute"))

    await limiter.check("login", client="198.51.100.1", email="ada@example.com")
    await limiter.check("login", client="198.51.100.2", email="ada@example.com")
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("login", client="198.51.100.3", email="ada@example.com")

    assert refused.value.scope == "email"
    # Another address from the same clients is unaffected.
    await limiter.check("login", client="198.51.100.3", email="grace@example.com")


async def test_the_per_client_limit_counts_across_email_addresses(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limits=limits(resend_client="2/minute"))

    await limiter.check("resend", client="198.51.100.1", email="a@example.com")
    await limiter.check("resend", client="198.51.100.1", email="b@example.com")
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("resend", client="198.51.100.1", email="c@example.com")

    assert refused.value.scope == "client"
    # Another client may still ask for the same address.
    await limiter.check("resend", client="198.51.100.2", email="c@example.com")


async def test_a_client_over_its_limit_does_not_use_up_an_addresss_budget(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limits=limits(signup_client="1/minute", signup_email="2/minute"))
    await limiter.check("signup", client="198.51.100.66", email="victim@example.com")
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            await limiter.check("signup", client="198.51.100.66", email="victim@example.com")

    # Refused attempts were not counted for the address: its second one still passes.
    await limiter.check("signup", client="198.51.100.7", email="victim@example.com")
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("signup", client="198.51.100.8", email="victim@example.com")
    assert refused.value.scope == "email"


async def test_a_refresh_counts_per_client_and_per_session(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(refresh_client="3/minute", refresh_session="2/minute"))
    tab, other_tab = uuid.uuid4(), uuid.uuid4()

    await allowed(limiter, "refresh", 2, client="198.51.100.1", session=tab)
    with capture_logs() as logs, pytest.raises(RateLimitedError) as refused:
        await limiter.check("refresh", client="198.51.100.2", session=tab)

    assert (refused.value.action, refused.value.scope) == ("refresh", "session")
    [line] = [line for line in logs if line["event"] == "rate_limit.exceeded"]
    assert (line["session_id"], line["client"]) == (str(tab), "198.51.100.2")
    # The session refused first: the per-client count of 198.51.100.1 holds one more.
    await limiter.check("refresh", client="198.51.100.1", session=other_tab)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("refresh", client="198.51.100.1", session=other_tab)
    assert refused.value.scope == "client"


async def test_check_subject_counts_the_subject_alone(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(refresh_client="1/minute", refresh_session="2/minute"))
    session = uuid.uuid4()

    await limiter.check("refresh", client="198.51.100.1")
    # The client was counted once, by check: check_subject does not count it again.
    await limiter.check_subject("refresh", client="198.51.100.1", session=session)
    await limiter.check_subject("refresh", client="198.51.100.1", session=session)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check_subject("refresh", client="198.51.100.1", session=session)
    assert refused.value.scope == "session"
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("refresh", client="198.51.100.1")
    assert refused.value.scope == "client"


async def test_a_subject_outside_the_actions_scopes_is_a_bug_not_a_pass(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(enabled=False)

    with pytest.raises(ValueError, match="no session scope"):
        await limiter.check("login", client="198.51.100.1", session=uuid.uuid4())
    with pytest.raises(ValueError, match="no email scope"):
        await limiter.check("refresh", client="198.51.100.1", email="ada@example.com")
    with pytest.raises(ValueError, match="needs a subject"):
        await limiter.check_subject("refresh", client="198.51.100.1")


def test_each_action_counts_its_client_first_then_one_subject() -> None:
    assert set(ACTION_SCOPES) == set(ACTIONS)
    for scopes in ACTION_SCOPES.values():
        assert scopes[0] == "client"
        assert len(scopes) == 2
    assert ACTION_SCOPES["refresh"] == ("client", "session")
    assert ("refresh", "session") in PAIRS
    assert ("login", "session") not in PAIRS
    assert ("refresh", "email") not in PAIRS


def test_refusal_series_exist_for_the_valid_pairs_only() -> None:
    series = {
        (sample.labels["action"], sample.labels["scope"])
        for metric in RATE_LIMITED.collect()
        for sample in metric.samples
        if sample.name == "herald_api_rate_limited_total"
    }
    assert series == set(PAIRS)


def test_limits_must_name_every_pair_and_no_other(make_limiter: MakeLimiter) -> None:
    incomplete = limits()
    del incomplete["refresh", "session"]
    with pytest.raises(ValueError, match="missing"):
        make_limiter(limits=incomplete)
    with pytest.raises(ValueError, match="unknown"):
        make_limiter(limits=limits() | {("login", "session"): GENEROUS})


async def test_email_addresses_are_counted_case_insensitively(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(login_email="1/minute"))

    await limiter.check("login", client="198.51.100.1", email="Ada@Example.com")
    with pytest.raises(RateLimitedError):
        await limiter.check("login", client="198.51.100.2", email=" ada@example.COM ")


async def test_ipv6_clients_are_counted_per_64(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(signup_client="1/minute"))

    await limiter.check("signup", client="2001:db8:1:2::1")
    with pytest.raises(RateLimitedError):
        await limiter.check("signup", client="2001:db8:1:2:ffff::9")
    await limiter.check("signup", client="2001:db8:1:3::1")

    assert client_bucket("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_bucket("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_bucket("192.0.2.1") == "192.0.2.1"
    assert client_bucket("unknown") == "unknown"


async def test_actions_are_counted_apart(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=limits(signup_client="1/minute", login_client="1/minute"))

    await limiter.check("signup", client="198.51.100.1")
    await limiter.check("login", client="198.51.100.1")
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("login", client="198.51.100.1")
    assert refused.value.action == "login"


async def test_two_limiters_on_one_namespace_share_their_counts(
    make_limiter: MakeLimiter,
) -> None:
    replica_a = make_limiter(limits=limits(signup_email="3/minute"))
    replica_b = make_limiter(limits=limits(signup_email="3/minute"))

    await replica_a.check("signup", client="198.51.100.1", email="ada@example.com")
    await replica_b.check("signup", client="198.51.100.2", email="ada@example.com")
    await replica_a.check("signup", client="198.51.100.3", email="ada@example.com")
    with pytest.raises(RateLimitedError):
        await replica_b.check("signup", client="198.51.100.4", email="ada@example.com")


async def test_namespaces_keep_their_counts_apart(
    make_limiter: MakeLimiter, queue_namespace: str, redis_client: aioredis.Redis
) -> None:
    other = f"{queue_namespace}-other"
    ours = make_limiter(limits=limits(signup_client="1/minute"))
    theirs = make_limiter(limits=limits(signup_client="1/minute"), namespace=other)
    await ours.check("signup", client="198.51.100.1")
    # Its own count, not ours (queue_namespace's clean-up matches "*<namespace>*": this too).
    await theirs.check("signup", client="198.51.100.1")
    with pytest.raises(RateLimitedError):
        await ours.check("signup", client="198.51.100.1")

    assert [key async for key in redis_client.scan_iter(match=f"{other}:ratelimit:*")]


async def test_keys_hold_a_digest_of_the_email_address_never_the_address(
    make_limiter: MakeLimiter, queue_namespace: str, redis_client: aioredis.Redis
) -> None:
    limiter = make_limiter()

    await limiter.check("resend", client="198.51.100.1", email="Ada@Example.com")

    keys = sorted(
        [key.decode() async for key in redis_client.scan_iter(match=f"{queue_namespace}:*")]
    )
    digest = hashlib.sha256(b"ada@example.com").hexdigest()
    assert keys == [
        f"{queue_namespace}:ratelimit:resend/client/198.51.100.1/1000/1/hour",
        f"{queue_namespace}:ratelimit:resend/email/{digest}/1000/1/hour",
    ]
    for key in keys:
        assert 0 < await redis_client.ttl(key) <= 3600


async def test_refresh_keys_hold_the_session_id(
    make_limiter: MakeLimiter, queue_namespace: str, redis_client: aioredis.Redis
) -> None:
    limiter = make_limiter()
    session = uuid.uuid4()

    await limiter.check("refresh", client="2001:db8:1:2::1")
    await limiter.check_subject("refresh", client="2001:db8:1:2::1", session=session)

    keys = sorted(
        [key.decode() async for key in redis_client.scan_iter(match=f"{queue_namespace}:*")]
    )
    assert keys == [
        f"{queue_namespace}:ratelimit:refresh/client/2001:db8:1:2::/64/1000/1/hour",
        f"{queue_namespace}:ratelimit:refresh/session/{session}/1000/1/hour",
    ]


async def test_retry_after_is_when_the_oldest_attempt_leaves_the_window(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter(limits=limits(login_email="1/2seconds"))
    await limiter.check("login", client="198.51.100.1", email="ada@example.com")

    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("login", client="198.51.100.1", email="ada@example.com")
    assert 1 <= refused.value.retry_after <= 2

    await asyncio.sleep(2.05)
    await limiter.check("login", client="198.51.100.1", email="ada@example.com")


async def test_disabled_limits_never_refuse_nor_touch_redis(
    make_limiter: MakeLimiter, redis_url: str
) -> None:
    limiter = make_limiter(
        limits=limits(signup_client="1/hour"),
        redis=with_port(redis_url, free_port()),
        enabled=False,
    )

    with capture_logs() as logs:
        await allowed(limiter, "signup", 5, client="198.51.100.1", email="ada@example.com")

    assert logs == []


async def test_with_redis_down_attempts_pass_at_once_with_a_warning_then_skip_redis(
    make_limiter: MakeLimiter, redis_url: str
) -> None:
    limiter = make_limiter(
        limits=limits(login_client="1/hour"), redis=with_port(redis_url, free_port())
    )
    failed_before = fail_open_count("login", "redis")
    paused_before = fail_open_count("login", "paused")

    started = time.monotonic()
    with capture_logs() as logs:
        await allowed(limiter, "login", 20, client="198.51.100.1", email="ada@example.com")
    elapsed = time.monotonic() - started

    assert elapsed < 0.5
    [warning] = [line for line in logs if line["event"] == "rate_limit.unavailable"]
    assert warning["log_level"] == "warning"
    assert (warning["action"], warning["reason"]) == ("login", "redis")
    assert "ConnectionError" in warning["error"]
    assert fail_open_count("login", "redis") == failed_before + 1
    assert fail_open_count("login", "paused") == paused_before + 19


async def test_a_redis_that_never_answers_costs_one_timeout(
    make_limiter: MakeLimiter, redis_url: str
) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = make_limiter(redis=with_port(redis_url, port), timeout_seconds=0.2)
    try:
        started = time.monotonic()
        with capture_logs() as logs:
            await allowed(limiter, "signup", 10, client="198.51.100.1")
        elapsed = time.monotonic() - started
    finally:
        for writer in silent:
            writer.close()
        server.close()

    assert 0.2 <= elapsed < 0.6
    reasons = [line["reason"] for line in logs if line["event"] == "rate_limit.unavailable"]
    assert reasons == ["timeout"]


class TcpProxy:
    """A TCP proxy to Redis that a test can take down and bring back on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()
        self._tasks.clear()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


async def test_limits_hold_again_once_redis_is_back(
    make_limiter: MakeLimiter, redis_url: str
) -> None:
    target = urlsplit(redis_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    limiter = make_limiter(
        limits=limits(login_client="2/minute"), redis=with_port(redis_url, proxy.port)
    )
    try:
        await allowed(limiter, "login", 2, client="198.51.100.1")
        await proxy.stop()
        # Over the limit, but Redis is down: let through.
        await limiter.check("login", client="198.51.100.1")

        await proxy.start()
        # Still within the pause: let through without asking Redis.
        await limiter.check("login", client="198.51.100.1")
        await asyncio.sleep(PAUSE_AFTER_FAILURE_SECONDS + 0.05)
        with capture_logs() as logs, pytest.raises(RateLimitedError):
            await limiter.check("login", client="198.51.100.1")
    finally:
        await proxy.stop()

    assert [line["event"] for line in logs] == ["rate_limit.recovered", "rate_limit.exceeded"]


async def test_default_limits_are_valid(make_limiter: MakeLimiter) -> None:
    defaults = {
        name: field.default
        for name, field in Settings.model_fields.items()
        if name.startswith("rate_limit_") and name != "rate_limit_timeout_seconds"
    }
    assert len(defaults) == len(PAIRS)
    chosen = {
        (action, scope): defaults[f"rate_limit_{action}_per_{scope}"] for action, scope in PAIRS
    }

    limiter = make_limiter(limits=chosen)

    assert all(limiter.limits[pair] for pair in chosen)


@pytest.mark.parametrize("value", ["10/minut", "ten/minute", "", "0/minute", "5/hour;0/day"])
def test_a_malformed_limit_fails_at_startup_naming_its_variable(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(rate_limit_login_per_email=value)

    [error] = [e for e in info.value.errors() if e["loc"] == ("rate_limit_login_per_email",)]
    assert "HERALD_RATE_LIMIT_LOGIN_PER_EMAIL must be rate limits like" in error["msg"]

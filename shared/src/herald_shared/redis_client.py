"""The one way Herald builds a Redis client: from ``HERALD_REDIS_URL``, or through Sentinel.

With ``HERALD_REDIS_SENTINELS`` empty, a client is ``redis.asyncio.from_url``
of the URL, as SAQ's own ``Queue.from_url`` makes it. With Sentinels, it is
``Sentinel(...).master_for(master)``: every new connection asks the Sentinels
where the master is, and a connection refused by a demoted master (READONLY)
is dropped, so the client follows a failover. A failover closes every
connection to the old master: a command that meets a closed connection is
sent once more, on a new connection to the new master (``FAILOVER_RETRY``;
the URL path keeps redis-py's ``from_url`` default of none). The URL then still gives the
scheme (``rediss://`` for TLS), the username, password, database and query
options of the master; its host and port are not used. SAQ does not run on
Redis Cluster (its Lua scripts touch several keys), so there is no cluster mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis, SSLConnection
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff

__all__ = [
    "FAILOVER_RETRY",
    "SENTINEL_TIMEOUT_SECONDS",
    "RedisTarget",
    "parse_sentinels",
    "redis_client",
]

SENTINEL_TIMEOUT_SECONDS = 2.0
"""Connect and reply timeout of each question to a Sentinel, so that an unreachable one
is passed over for the next instead of hanging the connection."""


FAILOVER_RETRY = Retry(NoBackoff(), 1)
"""With Sentinels, each command that meets a closed or refused connection is sent once
more, at once (on connection errors and timeouts only), unless ``options`` give a
``retry`` of their own."""


@dataclass(frozen=True)
class RedisTarget:
    """Where Herald's Redis is: the URL alone, or the URL plus the Sentinels and the name
    they know the master by (``CommonSettings.redis_target``)."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    sentinel_password: str | None = None


def parse_sentinels(
    value: str, *, variable: str = "HERALD_REDIS_SENTINELS"
) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` as (host, port) pairs; empty for an empty string.

    Raises ``ValueError`` naming the entry's position and what is wrong with it
    (not the value). An IPv6 address is written in brackets: ``[::1]:26379``.
    """
    entries = [entry.strip() for entry in value.split(",")] if value.strip() else []
    pairs: list[tuple[str, int]] = []
    for position, entry in enumerate(entries, start=1):
        where = f"{variable} entry {position} of {len(entries)}"
        host, sep, port = entry.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host:
            raise ValueError(f"{where} must be host:port (e.g. sentinel-1:26379)")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{where} has no port number 1-65535 after its last ':'")
        pairs.append((host, int(port)))
    return tuple(pairs)


def redis_client(target: RedisTarget | str, **options: Any) -> Redis:
    """A client of ``target``'s Redis (a URL is a target without Sentinels); nothing
    connects until its first command.

    ``options`` (``socket_timeout``, ``retry``...) apply to each connection to Redis;
    with Sentinels, the ``socket_*`` ones also to the questions to the Sentinels.
    """
    if isinstance(target, str):
        target = RedisTarget(target)
    if not target.sentinels:
        return Redis.from_url(target.url, **options)
    master: dict[str, Any] = dict(parse_url(target.url))
    for where in ("host", "port", "path"):
        master.pop(where, None)
    kind = master.pop("connection_class", None)
    if kind is not None and kind is not SSLConnection:
        raise ValueError("with Sentinels, the Redis URL must be redis:// or rediss://")
    master["connection_class"] = (
        _SSLMasterConnection if kind is SSLConnection else _MasterConnection
    )
    master["retry"] = FAILOVER_RETRY
    master.update(options)
    asked: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        # Each Sentinel once: redis-py's default (3 retries, backoff from 1 s) would
        # spend ~7 s on a dead one before asking the next.
        "retry": Retry(NoBackoff(), 0),
    }
    asked |= {k: v for k, v in options.items() if k.startswith("socket_")}
    if target.sentinel_password is not None:
        asked["password"] = target.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        list(target.sentinels), sentinel_kwargs=asked, **master
    )
    client: Redis = sentinel.master_for(target.master, redis_class=_SentinelMaster)
    return client


class _MasterConnection(SentinelManagedConnection):
    """A connection to whichever server the Sentinels call master when it connects.

    redis-py 7.4 asks the Sentinels in ``connect()`` only; a command's retry
    reconnects through ``connect_check_health``, which dials the address the
    connection last had: after a failover, the demoted master (READONLY).
    Asking in ``_connect`` makes every reconnect follow the failover.
    """

    async def _connect(self) -> None:
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class _SSLMasterConnection(_MasterConnection, SSLConnection):
    """``_MasterConnection`` over TLS (a ``rediss://`` URL)."""


class _SentinelMaster(Redis):
    """The master's client (``Sentinel.master_for``); closing it also closes the
    connections to the Sentinels, which redis-py leaves open."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await sentinel.aclose()

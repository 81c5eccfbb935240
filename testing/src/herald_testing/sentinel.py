"""A real Redis Sentinel set for a test: a master, a replica and Sentinels, on free ports.

Debian's ``redis-sentinel`` package (the ``redis-server`` binary run as a
Sentinel). The two Redis servers keep nothing on disk; each Sentinel
monitors the master under ``MASTER_NAME`` with a quorum of 1 and short
timeouts, so ``SentinelSet.failover`` promotes the replica in a second or two.
Everything runs in a temporary directory and stops when the block ends.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import redis

from herald_testing.ports import free_port, wait_for_port
from herald_testing.processes import server_process

MASTER_NAME = "herald-test"
"""The name the Sentinels know the master by (``HERALD_REDIS_SENTINEL_MASTER``)."""

SENTINEL_MISSING = (
    "redis-sentinel not installed: the Sentinel tests are skipped "
    "(Debian: apt install redis-sentinel)"
)

HOST = "127.0.0.1"


def sentinel_binary() -> str | None:
    """The ``redis-sentinel`` executable, or None where the package is not installed."""
    return shutil.which("redis-sentinel")


@dataclass(frozen=True)
class SentinelSet:
    """A running master, replica and Sentinels (``sentinel_set``)."""

    sentinel_ports: tuple[int, ...]
    redis_ports: tuple[int, ...]
    """The master's port, then the replica's (as started; a failover swaps the roles)."""

    @property
    def sentinels(self) -> str:
        """``HERALD_REDIS_SENTINELS``: every Sentinel, as ``host:port,host:port``."""
        return ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)

    def master_port(self) -> int:
        """The master's port, as the first Sentinel reports it now."""
        with redis.Redis(HOST, self.sentinel_ports[0], decode_responses=True) as sentinel:
            _host, port = sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
        return int(port)

    def server(self, port: int) -> redis.Redis:
        """A plain client of the Redis server on ``port`` (close it after use)."""
        return redis.Redis(HOST, port, decode_responses=True)

    def failover(self, *, within: float = 15.0) -> int:
        """A planned failover: once the replica has every write so far, have Sentinel
        promote it (``SENTINEL FAILOVER``); the new master's port, once it is master and
        the old one follows it.

        Sentinel does not wait for the replica itself: a write not yet replicated when
        it is promoted is lost (seen here under load). The wait makes the tests about
        following the master, not about asynchronous replication.
        """
        old = self.master_port()
        with self.server(old) as master:
            # WAIT counts this client's writes: one marker write, after every other.
            master.set("herald-test:failover", old)
            if master.wait(1, int(within * 1000)) < 1:
                raise TimeoutError(f"the replica did not catch up within {within:.0f} s")
        with redis.Redis(HOST, self.sentinel_ports[0]) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        new = next(port for port in self.redis_ports if port != old)
        _wait(lambda: self.master_port() == new, "Sentinel to report the new master", within)
        _wait(lambda: _role(self, new) == "master", "the replica to become master", within)
        _wait(lambda: _following(self, old, new), "the old master to follow the new", within)
        return new


def _role(cluster: SentinelSet, port: int) -> str:
    with cluster.server(port) as client:
        return str(client.info("replication")["role"])


def _following(cluster: SentinelSet, port: int, master: int) -> bool:
    with cluster.server(port) as client:
        info = client.info("replication")
    return (
        info["role"] == "slave"
        and int(info["master_port"]) == master
        and info["master_link_status"] == "up"
    )


def _wait(check: Callable[[], bool], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass  # a server between roles, or not listening yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:.0f} s for {what}")
        time.sleep(0.05)


@contextmanager
def sentinel_set(*, sentinels: int = 1) -> Iterator[SentinelSet]:
    """Run a master, a replica of it and ``sentinels`` Sentinels; yield them once every
    Sentinel sees the replica (so a failover can pick it)."""
    binary = sentinel_binary()
    if binary is None:
        raise FileNotFoundError(SENTINEL_MISSING)
    redis_ports = (free_port(), free_port())
    sentinel_ports = tuple(free_port() for _ in range(sentinels))
    with tempfile.TemporaryDirectory(prefix="herald-sentinel-") as workdir, ExitStack() as stack:
        directory = Path(workdir)
        master, replica = redis_ports
        server = [
            "redis-server",
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            # A replica syncs at once (Redis 7 waits 5 s for more replicas to share a sync).
            "--repl-diskless-sync-delay",
            "0",
        ]
        stack.enter_context(
            server_process([*server, "--port", str(master)], directory, f"redis-{master}")
        )
        wait_for_port(HOST, master, timeout=10.0, what="redis master")
        stack.enter_context(
            server_process(
                [*server, "--port", str(replica), "--replicaof", HOST, str(master)],
                directory,
                f"redis-{replica}",
            )
        )
        cluster = SentinelSet(sentinel_ports=sentinel_ports, redis_ports=redis_ports)
        _wait(lambda: _following(cluster, replica, master), "the replica's link", 10.0)
        for port in sentinel_ports:
            config = directory / f"sentinel-{port}.conf"
            # Sentinel rewrites its file (what it learns); it must be writable.
            config.write_text(
                f"port {port}\n"
                f"bind {HOST}\n"
                f"dir {directory}\n"
                f"sentinel monitor {MASTER_NAME} {HOST} {master} 1\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 3000\n"
            )
            stack.enter_context(
                server_process([binary, str(config)], directory, f"sentinel-{port}")
            )
        for port in sentinel_ports:
            wait_for_port(HOST, port, timeout=10.0, what="redis-sentinel")
            with redis.Redis(HOST, port) as sentinel:
                # After a failover Sentinel tells the old master to follow the new one
                # once it has reported itself master for 4 publish periods, learnt
                # from INFO: with 0.2 and 0.5 s (not 2 and 10), within about a second.
                sentinel.execute_command(
                    "SENTINEL", "DEBUG", "info-period", "500", "publish-period", "200"
                )
            _wait(partial(_sees_replica, port), f"Sentinel {port} to see the replica", 15.0)
        yield cluster


def _sees_replica(sentinel_port: int) -> bool:
    with redis.Redis(HOST, sentinel_port, decode_responses=True) as sentinel:
        replicas = sentinel.execute_command("SENTINEL", "REPLICAS", MASTER_NAME)
    # Each replica is a flat [name, value, ...] list.
    fields = [dict(zip(r[::2], r[1::2], strict=True)) for r in replicas]
    return any(f["flags"] == "slave" and f["master-link-status"] == "ok" for f in fields)

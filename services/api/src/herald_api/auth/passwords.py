"""Password hashing and verification with argon2id, off the event loop.

argon2-cffi releases the GIL while hashing, so a thread pool sized to the CPU
count hashes in parallel. Hashes running or waiting are bounded (workers + queue
depth): past the bound a hash is refused at once with ``OverloadedError`` (a 503),
so an overload sheds requests instead of raising everyone's latency without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from herald_api.core.admission import OverloadedError

T = TypeVar("T")

log = structlog.get_logger(__name__)


def _encode(password: str) -> bytes:
    # A lone surrogate (JSON "\ud800", or a form field) cannot be UTF-8; passed
    # through, it matches no stored hash (signup refuses it) instead of raising.
    return password.encode("utf-8", "surrogatepass")


HASH_THREAD_NICENESS = 10
"""How much lower the hash threads' CPU priority is than the event loop's."""


def _yield_to_the_loop() -> None:
    """Lower this hash thread's CPU priority (Linux schedules threads one by one).

    With as many hash threads as cores, every core is busy hashing under load, and
    the event loop, which answers health checks, sheds with 503 and finishes
    admitted requests, would wait its turn behind them. A nice hash thread still
    gets every cycle nobody else wants, so throughput does not change.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


class PasswordHasher:
    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, workers: int, queue_depth: int
    ) -> None:
        """``workers`` threads hash; at most ``queue_depth`` more hashes wait for them."""
        self._argon2 = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2", initializer=_yield_to_the_loop
        )
        # Taken on the event loop, given back by the thread that ran (or the shutdown that
        # cancelled) the hash: a request abandoned meanwhile does not free a slot its hash
        # still occupies.
        self._slots = threading.BoundedSemaphore(workers + queue_depth)
        # A hash of nothing anyone knows, with today's parameters: verifying
        # against it costs what verifying a real user's password costs.
        self._dummy_hash = self._argon2.hash(secrets.token_urlsafe(32))

    async def hash(self, password: str) -> str:
        """The argon2id hash of ``password``; ``OverloadedError`` if the hash queue is full."""
        return await self._run(self._argon2.hash, password)

    async def verify(self, hash: str, password: str) -> bool:
        """Whether ``password`` is the one ``hash`` was made from; ``OverloadedError`` if
        the hash queue is full."""
        return await self._run(self._verify, hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend what ``verify`` spends, for a login whose user does not exist.

        Without it an unknown email would be answered ~1 ms after the request
        and a wrong password ~20-50 ms after it: the time alone would tell which
        addresses have an account.
        """
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, hash: str) -> bool:
        """Whether ``hash`` is weaker than what ``hash()`` makes now.

        Only weaker: another API process with higher (not yet rolled out)
        parameters must not see its fresh hashes downgraded here, or the two
        would rewrite each other's hashes on every login. Parallelism is not a
        strength (lanes split the same memory), so it alone never triggers one.
        """
        try:
            stored = extract_parameters(hash)
        except InvalidHashError:
            return True
        current = self._argon2
        return (
            stored.type is not Type.ID
            or stored.version < 19
            or stored.memory_cost < current.memory_cost
            or stored.time_cost < current.time_cost
            or stored.hash_len < current.hash_len
            or stored.salt_len < current.salt_len
        )

    async def _run(self, work: Callable[..., T], *args: str) -> T:
        if not self._slots.acquire(blocking=False):
            raise OverloadedError("hash")
        try:
            future = self._executor.submit(work, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: Future[Any]) -> None:
        self._slots.release()

    def _verify(self, hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(hash, _encode(password))
        except VerificationError:
            return False
        except InvalidHashError:
            # A stored hash that is not argon2 at all: a data problem to look at,
            # never the user's fault, and never logged (it may be a real hash).
            log.error("password.hash_invalid")
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

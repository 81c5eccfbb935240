"""Password hashing with argon2id, off the event loop.

argon2-cffi releases the GIL while hashing, so a thread pool sized to the CPU
count hashes in parallel; its queue bounds the work, so an overload raises
latency for everyone instead of starving the loop.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int, workers: int) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._argon2.hash, password)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

"""Waiting for a condition in tests, with a deadline instead of a sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable


async def eventually(
    check: Callable[[], object],
    what: str = "the condition",
    *,
    within: float = 10.0,
    every: float = 0.05,
) -> None:
    """Poll ``check()`` (plain or async) until it is truthy.

    Raises ``AssertionError`` naming ``what`` once ``within`` seconds have passed.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(every)

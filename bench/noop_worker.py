"""A plain SAQ worker running no-op jobs: the raw SAQ baseline of the notifier.

HERALD_REDIS_URL=... python -m bench.noop_worker QUEUE_NAME CONCURRENCY
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from saq import Queue, Worker

NOOP = "noop"


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def run(queue_name: str, concurrency: int) -> None:
    queue = Queue.from_url(os.environ["HERALD_REDIS_URL"], name=queue_name)
    worker: Worker[Any] = Worker(queue, functions=[(NOOP, noop)], concurrency=concurrency)
    await queue.connect()
    print("ready", flush=True)
    try:
        await worker.start()
    finally:
        await queue.disconnect()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))

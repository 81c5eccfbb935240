"""Redis retention per delivered email (issue 13, point 3): what a real notifier leaves in
Redis once it has sent an email, and how long the address stays after the send.

    uv run --group bench python -m bench.retention [EMAILS]

Standalone, it starts its own SMTP sink (``bench.sink``) and one ``herald-notifier``
process (default settings, concurrency 10) on a queue namespace of its own
(``bench_<id>_retention``) on the local Redis (``HERALD_REDIS_URL``), and deletes that
namespace's keys at the end. ``measure_retention`` is the part ``python -m bench`` calls,
with the sink it already runs.

Measured, with ``emails`` WelcomeEmails (distinct addresses, display name "Bench User")
enqueued at once:

- ``redis_bytes_per_email``: the sum of ``MEMORY USAGE`` over every key of the namespace
  once every job has finished, minus the same sum before the emails were enqueued (the
  idle worker's own keys), divided by ``emails``. It counts whatever the emails left:
  their delivery records, and any job, letter or structure that grew;
- ``redis_record_bytes``: ``MEMORY USAGE`` of one delivery record (the median);
- ``redis_pii_seconds_after_send`` (and ``_p50``): for each email, from the sink's SMTP
  accept (its log's timestamp, taken before it answers 250) to the first poll (every
  ~2 ms, one pipeline of ``GET``) that finds its job key gone or no longer holding the
  address; the maximum over the emails (the median). The job is the only key that holds
  the address: once all are gone a ``SCAN`` of the namespace checks that no key holds
  any address of the run (``redis_pii_keys_left``, 0 expected).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from bench.common import BIN, Processes, SinkLog, delete_keys, recipient
from herald_shared import queues
from herald_shared.ledger import delivery_record_key, job_key
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import enqueue
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port, wait_for_port

EMAILS = 200
"""Emails per measurement (``python -m bench.retention EMAILS`` to change it)."""

POLL_SECONDS = 0.002
NOTIFIER_CONCURRENCY = 10


async def measure_retention(
    procs: Processes,
    sink: SinkLog,
    *,
    redis_url: str,
    namespace: str,
    tag: str,
    emails: int = EMAILS,
) -> dict[str, float]:
    """Start a notifier on ``namespace`` (``procs``' env must point ``HERALD_SMTP_*`` at
    the running sink whose log is ``sink``), send ``emails`` WelcomeEmails to ``tag``'s
    addresses (``bench.common.recipient``; ``tag`` has no ``-``), stop it, and return
    the figures the module docstring describes. The namespace's keys are left for the
    caller to delete."""
    name = f"notifier-{namespace}"
    procs.start(
        name,
        str(BIN / "herald-notifier"),
        env=procs.env
        | {
            "HERALD_QUEUE_NAMESPACE": namespace,
            "HERALD_NOTIFIER_CONCURRENCY": str(NOTIFIER_CONCURRENCY),
        },
    )
    queue = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=namespace)
    redis = aioredis.from_url(redis_url)
    try:
        procs.wait_log(name, "notifier.started")
        await queue.connect()
        messages = [
            welcome_email(email=recipient(tag, i), display_name="Bench User") for i in range(emails)
        ]
        before = await _memory_usage(redis, namespace)
        for start in range(0, emails, 250):
            await asyncio.gather(*(enqueue(queue, m) for m in messages[start : start + 250]))
        gone = await _watch_addresses(redis, queue.name, messages, within=120.0)
        accepted = await sink.wait(tag, emails, within=60.0)
        await asyncio.sleep(0.5)  # any write that follows a job's end (none expected)
        after = await _memory_usage(redis, namespace)
        records = [
            float(await redis.memory_usage(delivery_record_key(queue.name, m.message_id)) or 0)
            for m in messages[:25]
        ]
        leaks = await _keys_holding(redis, namespace, [m.email for m in messages])
    finally:
        procs.stop(name)
        await queue.disconnect()
        await redis.aclose()
    windows = [gone[m.email] - accepted[m.email.lower()] for m in messages]
    return {
        "redis_bytes_per_email": (after - before) / emails,
        "redis_record_bytes": statistics.median(records),
        "redis_pii_seconds_after_send": max(windows),
        "redis_pii_seconds_after_send_p50": statistics.median(windows),
        "redis_pii_keys_left": float(len(leaks)),
    }


async def _watch_addresses(
    redis: aioredis.Redis, queue_name: str, messages: list[WelcomeEmail], *, within: float
) -> dict[str, float]:
    """When (unix time) each message's job was first seen without its address."""
    waiting = {job_key(queue_name, m.message_id): m.email for m in messages}
    gone: dict[str, float] = {}
    deadline = time.monotonic() + within
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} jobs still hold their address")
        keys = list(waiting)
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            values = await pipe.execute()
        seen = time.time()
        for key, value in zip(keys, values, strict=True):
            address = waiting[key]
            if value is None or address.encode() not in value:
                gone[address] = seen
                del waiting[key]
        await asyncio.sleep(POLL_SECONDS)
    return gone


async def _memory_usage(redis: aioredis.Redis, namespace: str) -> float:
    """``MEMORY USAGE`` summed over every key of ``namespace``."""
    total = 0
    async for key in redis.scan_iter(match=f"*{namespace}*", count=1000):
        total += await redis.memory_usage(key) or 0
    return float(total)


async def _keys_holding(redis: aioredis.Redis, namespace: str, addresses: list[str]) -> list[str]:
    """The keys of ``namespace`` whose value (a string's, a hash's or a list's) holds any
    of ``addresses``."""
    wanted = [address.encode() for address in addresses]
    found = []
    async for key in redis.scan_iter(match=f"*{namespace}*", count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            values = [await redis.get(key) or b""]
        elif kind == "hash":
            values = await redis.hvals(key)  # type: ignore[misc]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)  # type: ignore[misc]
        else:
            continue
        if any(address in value for value in values for address in wanted):
            found.append(key.decode())
    return found


async def _forget(redis_url: str, namespace: str) -> None:
    redis = aioredis.from_url(redis_url)
    try:
        await delete_keys(redis, f"*{namespace}*")
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    emails = int(args[0]) if args else EMAILS
    run_id = uuid.uuid4().hex[:8]
    redis_url = os.environ.get("HERALD_REDIS_URL", "redis://127.0.0.1:6379/0")
    smtp_port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix=f"herald-retention-{run_id}-"))
    env = dict(os.environ) | {
        "HERALD_REDIS_URL": redis_url,
        "HERALD_SMTP_HOST": "127.0.0.1",
        "HERALD_SMTP_PORT": str(smtp_port),
        "HERALD_METRICS_PORT": "0",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "2",
        "HERALD_LINK_SECRET": secrets.token_urlsafe(48),
    }
    procs = Processes(env=env, log_dir=log_dir)
    sink = SinkLog(log_dir / "sink-accepted.tsv")
    namespace = f"bench_{run_id}_retention"
    try:
        procs.start("sink", sys.executable, "-m", "bench.sink", str(smtp_port), str(sink.path))
        wait_for_port("127.0.0.1", smtp_port, what="SMTP sink")
        figures = asyncio.run(
            measure_retention(
                procs,
                sink,
                redis_url=redis_url,
                namespace=namespace,
                tag=f"r{run_id}",
                emails=emails,
            )
        )
    finally:
        procs.stop_all()
        asyncio.run(_forget(redis_url, namespace))
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    print(f"({emails} emails; logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: Herald's speed, measured on the real local services; one table.

    uv run --group bench python -m bench [--quick | --profile] [--results PATH]

What it starts, all on this machine: a fresh PostgreSQL database
``herald_bench_<id>`` (migrated by ``herald-api migrate``; dropped at the end),
queue namespaces ``bench_<id>_*`` on the local Redis (their keys deleted at the
end), an aiosmtpd sink that accepts and discards (``bench.sink``, its own
process), ``herald-api serve`` (uvicorn, as Herald runs it), ``herald-notifier``
processes, a Redis of its own for item 5, and the peers of item 7. The HTTP
load generator is one ``httpx.AsyncClient`` driven by N concurrent asyncio
tasks in this process, which shares the machine's cores with the servers.

Measured (items of the speed issue):

1. argon2id hash time with Herald's parameters (median of N, this process);
2. signups: p50 / p99 latency and signups/s at concurrency 1, 8, 32 (the
   notifier is not running meanwhile; its jobs wait in Redis); then overload
   (``bench.overload``): 256 clients signing up at once, a 503 counted as
   shed, with a /health/live prober meanwhile; then sessions
   (``bench.sessions``): a refresh's latency, and what the session check adds
   to an authenticated request;
3. notifier: 5,000 WelcomeEmails enqueued while the notifier is paused
   (SIGSTOP), then drained by the one process to the sink (SIGCONT to the
   sink's last accept); the same for 5,000 no-op jobs and a plain SAQ worker
   of the same concurrency (SIGCONT to an empty queue); one notifier's
   emails/s over one API process's best signups/s; the renderer's CPU per
   email (``bench.render_cost``, in this process);
4. signup -> SMTP accepted latency at half the best signups/s (open loop);
5. outbox drain: 1,000 pending rows, time from Redis's return until all are
   relayed (``bench.outage``);
6. RSS of the api and notifier processes, idle and after their load;
7. peers: the same signup as a plain FastAPI app sending the email with
   ``BackgroundTasks`` (``bench.peer_fastapi``) and on fastapi-users
   (``bench/fastapi_users_peer.py``), each measured as in 2 and 4; the same
   welcome-email job on arq (``bench/arq_peer.py``), measured as in 3.

Besides the table it writes the figures to ``bench/results.json``
(``bench.results``; ``--results`` for another path).

``--profile`` runs py-spy instead of the table (``bench.profiling``): on the
API under signup load at concurrency 8 (CPU) and 1 (wall clock, idle threads
sampled too), on the notifier draining 5,000 welcome emails, and on the arq
peer draining as many; it writes the raw stacks and their summaries
(``bench.profile_report``) to ``bench/profiles/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis
import structlog
from argon2 import PasswordHasher, Type
from saq import Queue
from sqlalchemy.engine import make_url

from bench import profile_report, render_cost, sessions
from bench.common import (
    BIN,
    FASTAPI_USERS_SIGNUP,
    HERALD_SIGNUP,
    PASSWORD,
    ROOT,
    Endpoint,
    LoadResult,
    Processes,
    SinkLog,
    Table,
    closed_loop,
    delete_keys,
    e2e_latencies,
    goal,
    migrate,
    ms,
    open_loop,
    percentile,
    recipient,
    rss_mib,
    uv,
    wait_ready,
)
from bench.outage import outage_drain
from bench.overload import OverloadResult, overload
from bench.overload import p as maybe_p
from bench.profiling import RATE, keep_py_spy, start_recording, stop_recording
from bench.results import Results
from bench.retention import measure_retention
from bench.size import GOAL_RATIO as SIZE_GOAL_RATIO
from bench.size import OPERATIONS as SIZE_OPERATIONS
from bench.size import measure_size
from herald_api.core.settings import Settings as ApiSettings
from herald_shared import queues
from herald_shared.tasks import enqueue
from herald_testing.backends import admin
from herald_testing.messages import welcome_email
from herald_testing.ports import free_port, wait_for_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/herald"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ARQ_PEER = ROOT / "bench" / "arq_peer.py"
FASTAPI_USERS_PEER = ROOT / "bench" / "fastapi_users_peer.py"
RESULTS = ROOT / "bench" / "results.json"
PROFILES = ROOT / "bench" / "profiles"
LEVELS = (1, 8, 32)
OVERLOAD_CLIENTS = 256
MAX_REDIS_BYTES_PER_EMAIL = 300
PII_WINDOW_SECONDS = 1.0
"""The window the README states: an address leaves Redis within a second of its send."""
NOTIFIER_CONCURRENCY = 10
"""Herald's default HERALD_NOTIFIER_CONCURRENCY, given to every worker here."""


def herald_sources() -> str:
    """The script peers' PYTHONPATH: ``bench`` and Herald's shared contract (source tree)."""
    return f"{ROOT}:{ROOT / 'shared' / 'src'}"


def fastapi_users_env(env: dict[str, str]) -> dict[str, str]:
    """The fastapi-users peer's environment: Herald's argon2id parameters, pool size and
    verification link lifetime (the API's settings as this run has them)."""
    api = ApiSettings()
    return env | {
        "PYTHONPATH": herald_sources(),
        "HERALD_ARGON2_TIME_COST": str(api.argon2_time_cost),
        "HERALD_ARGON2_MEMORY_KIB": str(api.argon2_memory_kib),
        "HERALD_ARGON2_PARALLELISM": str(api.argon2_parallelism),
        "HERALD_DATABASE_POOL_SIZE": str(api.database_pool_size),
        "HERALD_VERIFICATION_LINK_HOURS": str(api.verification_link_hours),
    }


@dataclass(frozen=True)
class Plan:
    hash_samples: int
    warmup_seconds: float
    load_seconds: float
    overload_seconds: float
    messages: int
    render_rounds: int
    latency_seconds: float
    outage_rows: int
    outage_seconds: float
    retention_emails: int
    session_samples: int


FULL = Plan(
    hash_samples=30,
    warmup_seconds=2.0,
    load_seconds=15.0,
    overload_seconds=20.0,
    messages=5000,
    render_rounds=20,
    latency_seconds=20.0,
    outage_rows=1000,
    outage_seconds=3.0,
    retention_emails=500,
    session_samples=500,
)
QUICK = Plan(
    hash_samples=5,
    warmup_seconds=1.0,
    load_seconds=2.0,
    overload_seconds=3.0,
    messages=200,
    render_rounds=4,
    latency_seconds=2.5,
    outage_rows=200,
    outage_seconds=2.0,
    retention_emails=100,
    session_samples=20,
)


@dataclass
class Bench:
    plan: Plan
    procs: Processes
    table: Table
    run_id: str
    database_url: str
    """Plain ``postgresql://`` (asyncpg's form)."""
    sink: SinkLog
    results: Results

    @property
    def env(self) -> dict[str, str]:
        return self.procs.env

    @property
    def redis_url(self) -> str:
        return self.env["HERALD_REDIS_URL"]

    def namespace(self, part: str) -> str:
        return f"bench_{self.run_id}_{part}"

    def tag(self, part: str) -> str:
        """A recipient tag unique to this run (no ``-``: see ``recipient``)."""
        return f"{part}{self.run_id}"

    def arq_env(self) -> dict[str, str]:
        return self.env | {"PYTHONPATH": herald_sources()}


# --- 1. hash floor -----------------------------------------------------------------------


def hash_floor(samples: int) -> float:
    """Median seconds of one argon2id hash with Herald's default parameters."""
    settings = ApiSettings()
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    hasher.hash(PASSWORD)  # warm-up
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        hasher.hash(PASSWORD)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# --- servers and load --------------------------------------------------------------------


def http_client(port: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits)


async def signup_levels(
    client: httpx.AsyncClient, b: Bench, part: str, endpoint: Endpoint = HERALD_SIGNUP
) -> list[LoadResult]:
    """A warm-up at N=4, then a closed loop at each of ``LEVELS``."""
    await closed_loop(
        client,
        concurrency=4,
        seconds=b.plan.warmup_seconds,
        tag=b.tag(f"{part}warm"),
        endpoint=endpoint,
    )
    results = []
    for level in LEVELS:
        results.append(
            await closed_loop(
                client,
                concurrency=level,
                seconds=b.plan.load_seconds,
                tag=b.tag(f"{part}c{level}"),
                endpoint=endpoint,
            )
        )
    return results


def level_figures(prefix: str, levels: list[LoadResult]) -> dict[str, float]:
    """``{prefix}_c{N}_p50_ms``, ``_p99_ms`` and ``_per_s`` for each level."""
    figures: dict[str, float] = {}
    for result in levels:
        key = f"{prefix}_c{result.concurrency}"
        figures |= {
            f"{key}_p50_ms": 1000 * result.p(0.5),
            f"{key}_p99_ms": 1000 * result.p(0.99),
            f"{key}_per_s": result.rate,
            f"{key}_shed": result.shed,
        }
    return figures


def describe_load(result: LoadResult, ceiling: float) -> tuple[str, str]:
    value = (
        f"p50 {ms(result.p(0.5))} / p99 {ms(result.p(0.99))}; "
        f"{result.rate:.1f} signups/s ({100 * result.rate / ceiling:.0f}% of ceiling)"
    )
    note = (
        f"{len(result.latencies)} signups in {result.elapsed:.1f} s"
        + (f", {result.shed} shed (503, retried after Retry-After)" if result.shed else "")
        + (f", {result.errors} errors" if result.errors else "")
    )
    return value, note


async def drain_to_sink(
    b: Bench, worker: str, tag: str, fill: Callable[[], Awaitable[None]]
) -> float:
    """Pause ``worker``, ``fill`` its queue with ``tag``'s emails, resume it, and
    return emails/s: ``messages`` / (the sink's last accept - the resume)."""
    b.procs.send_signal(worker, signal.SIGSTOP)
    await fill()
    resumed = time.time()
    b.procs.send_signal(worker, signal.SIGCONT)
    accepted = await b.sink.wait(tag, b.plan.messages, within=600)
    return b.plan.messages / (max(accepted.values()) - resumed)


async def enqueue_welcomes(queue: Queue, count: int, tag: str) -> None:
    for start in range(0, count, 250):
        await asyncio.gather(
            *(
                enqueue(queue, welcome_email(email=recipient(tag, i), display_name="Bench User"))
                for i in range(start, min(count, start + 250))
            )
        )


async def enqueue_noops(queue: Queue, count: int) -> None:
    for start in range(0, count, 250):
        await asyncio.gather(
            *(queue.enqueue("noop") for _ in range(start, min(count, start + 250)))
        )


async def run_arq_enqueue(b: Bench, queue_name: str, tag: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        uv(),
        "run",
        "--locked",
        "--script",
        str(ARQ_PEER),
        "enqueue",
        queue_name,
        str(b.plan.messages),
        tag,
        env=b.arq_env(),
        cwd=ROOT,
    )
    if await proc.wait() != 0:
        raise RuntimeError("arq peer: enqueue failed")


def start_notifier(b: Bench, name: str, namespace: str) -> None:
    b.procs.start(
        name,
        str(BIN / "herald-notifier"),
        env=b.env
        | {
            "HERALD_QUEUE_NAMESPACE": namespace,
            "HERALD_NOTIFIER_CONCURRENCY": str(NOTIFIER_CONCURRENCY),
        },
    )
    b.procs.wait_log(name, "notifier.started")


def start_arq(b: Bench, name: str, queue_name: str) -> None:
    b.procs.start(
        name,
        uv(),
        "run",
        "--locked",
        "--script",
        str(ARQ_PEER),
        "worker",
        queue_name,
        str(NOTIFIER_CONCURRENCY),
        env=b.arq_env(),
    )
    b.procs.wait_log(name, "ready", within=120)


async def notifier_drain(b: Bench, name: str) -> float:
    """Item 3: one notifier, ``messages`` WelcomeEmails to the sink; emails/s."""
    namespace = b.namespace(name)
    queue = queues.connect_queue(b.redis_url, queues.NOTIFIER, namespace=namespace)
    await queue.connect()
    tag = b.tag("n")
    try:
        return await drain_to_sink(
            b, name, tag, lambda: enqueue_welcomes(queue, b.plan.messages, tag)
        )
    finally:
        await queue.disconnect()


async def arq_drain(b: Bench, name: str) -> float:
    """Item 7b: the arq peer, ``messages`` WelcomeEmails to the sink; emails/s."""
    queue_name = b.namespace(name)
    tag = b.tag("a")
    return await drain_to_sink(b, name, tag, lambda: run_arq_enqueue(b, queue_name, tag))


# --- the table ---------------------------------------------------------------------------


async def measure(b: Bench) -> None:  # noqa: PLR0915  (one table, in the issue's order)
    plan, procs, table, results = b.plan, b.procs, b.table, b.results
    cores = os.cpu_count() or 1
    concurrency = NOTIFIER_CONCURRENCY

    # 1. Hash floor.
    hash_s = hash_floor(plan.hash_samples)
    ceiling = cores / hash_s
    table.add(
        "1. argon2id hash (m=19456 KiB, t=2, p=1)",
        ms(hash_s),
        note=f"median of {plan.hash_samples}, one thread",
    )
    table.add("hash-bound ceiling", f"{ceiling:.1f} signups/s", note=f"{cores} cores / hash time")
    results.add(hash_ms=1000 * hash_s, hash_ceiling_per_s=ceiling)

    # 2. Signups against Herald's API (namespace api); no notifier yet.
    api_ns = b.namespace("api")
    api_port = int(b.env["HERALD_API_PORT"])
    procs.start(
        "api", str(BIN / "herald-api"), "serve", env=b.env | {"HERALD_QUEUE_NAMESPACE": api_ns}
    )
    async with http_client(api_port) as client:
        await wait_ready(client, "/health/ready")
        await asyncio.sleep(1.0)
        api_idle = rss_mib(procs.pid("api"))
        herald = await signup_levels(client, b, "s")
        for result in herald:
            value, note = describe_load(result, ceiling)
            target = ""
            if result.concurrency > 1:
                target = goal(">= 95% of ceiling", result.rate >= 0.95 * ceiling)
            table.add(f"2. signup, concurrency {result.concurrency}", value, target, note)
        overhead = herald[0].p(0.5) - hash_s
        table.add(
            "API overhead (signup p50 at c=1 - hash)",
            ms(overhead),
            goal("<= 3 ms", overhead <= 0.003),
        )
        results.update(level_figures("signup", herald))
        results.add(api_overhead_ms=1000 * overhead)
        api_loaded = rss_mib(procs.pid("api"))
        best_rate = max(r.rate for r in herald)

        # 2b. Overload: 256 clients at once, a prober on /health/live meanwhile.
        c8_rate = herald[LEVELS.index(8)].rate
        crowd = await overload(
            f"http://127.0.0.1:{api_port}",
            clients=OVERLOAD_CLIENTS,
            seconds=plan.overload_seconds,
            tag=b.tag("o"),
        )
        report_overload(b, crowd, c8_rate)

        # 2c. Sessions: a refresh, and the session check of every authenticated request.
        figures = await sessions.measure_sessions(
            client,
            b.database_url,
            jwt_secret=b.env["HERALD_JWT_SECRET"],
            samples=plan.session_samples,
        )
        for measure_name, value, note in sessions.describe(figures):
            table.add(f"2c. {measure_name}", value, note=note)
        results.update(figures)

        # 3. Notifier throughput (namespace notifier), then raw SAQ (namespace saq).
        start_notifier(b, "notifier", b.namespace("notifier"))
        await asyncio.sleep(1.0)
        notifier_idle = rss_mib(procs.pid("notifier"))
        emails_rate = await notifier_drain(b, "notifier")
        notifier_loaded = rss_mib(procs.pid("notifier"))
        procs.stop("notifier")
        table.add(
            f"3. notifier: {plan.messages:,} WelcomeEmails, one process",
            f"{emails_rate:.0f} emails/s",
            note=f"resume -> sink's last accept; concurrency {concurrency}; aiosmtpd discard sink",
        )
        saq_name = queues.queue_name("noop", namespace=b.namespace("saq"))
        procs.start(
            "saq-noop", sys.executable, "-m", "bench.noop_worker", saq_name, str(concurrency)
        )
        procs.wait_log("saq-noop", "ready")
        await asyncio.sleep(1.0)
        procs.send_signal("saq-noop", signal.SIGSTOP)
        raw = Queue.from_url(b.redis_url, name=saq_name)
        await raw.connect()
        try:
            await enqueue_noops(raw, plan.messages)
            raw_drained = await queue_drain_seconds(raw, procs, "saq-noop", within=300)
        finally:
            await raw.disconnect()
        procs.stop("saq-noop")
        raw_rate = plan.messages / raw_drained
        table.add(
            f"raw SAQ: {plan.messages:,} no-op jobs, one worker",
            f"{raw_rate:.0f} jobs/s",
            note=f"{raw_drained:.2f} s to drain; concurrency {concurrency}",
        )
        # The goal: one notifier keeps far ahead of the API processes feeding it.
        ahead = emails_rate / best_rate
        table.add(
            "notifier / API (one process each)",
            f"{ahead:.1f}",
            goal(">= 3 (far ahead)", ahead >= 3),
            note=f"item 3 / item 2's best; raw SAQ runs {raw_rate / emails_rate:.1f}x the notifier",
        )
        render_s = render_cost.measure(rounds=plan.render_rounds)
        table.add(
            "render + serialize, one email",
            f"{render_s * 1000:.2f} ms",
            note="EmailMessage (policy SMTP) from the templates; median, one thread",
        )
        results.add(
            notifier_emails_per_s=emails_rate,
            raw_saq_jobs_per_s=raw_rate,
            notifier_vs_api=ahead,
            render_ms=1000 * render_s,
        )

        # 4. Signup -> SMTP accepted at half the best signups/s (namespace api's notifier).
        start_notifier(b, "notifier-api", api_ns)
        backlog = queues.connect_queue(b.redis_url, queues.NOTIFIER, namespace=api_ns)
        await backlog.connect()
        try:
            # The signups' welcome emails go first.
            deadline = time.monotonic() + 180
            while await backlog.count("incomplete") > 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("the signups' welcome emails not sent within 180 s")
                await asyncio.sleep(0.2)
        finally:
            await backlog.disconnect()
        rate = best_rate / 2
        herald_e2e = await signup_to_smtp(client, b, rate=rate, part="l")
        p50, p99 = herald_e2e.p(0.5), herald_e2e.p(0.99)
        table.add(
            f"4. signup -> SMTP accepted at {rate:.1f} signups/s",
            f"p50 {ms(p50)} / p99 {ms(p99)}",
            goal("p50 <= 50 ms, p99 <= 250 ms", p50 <= 0.05 and p99 <= 0.25),
            f"{herald_e2e.describe()}; {plan.latency_seconds:.0f} s; notifier running",
        )
        results.add(e2e_rate_per_s=rate, e2e_p50_ms=1000 * p50, e2e_p99_ms=1000 * p99)
        table.add(
            "6. RSS api",
            f"idle {api_idle:.0f} MiB / after load {rss_mib(procs.pid('api')):.0f} MiB",
            note=f"after the signup runs: {api_loaded:.0f} MiB",
        )
        table.add(
            "6. RSS notifier",
            f"idle {notifier_idle:.0f} MiB / after load {notifier_loaded:.0f} MiB",
            note=f"after {plan.messages:,} emails; item 4's notifier after its load: "
            f"{rss_mib(procs.pid('notifier-api')):.0f} MiB",
        )
        results.add(
            rss_api_idle_mib=api_idle,
            rss_api_loaded_mib=rss_mib(procs.pid("api")),
            rss_notifier_idle_mib=notifier_idle,
            rss_notifier_loaded_mib=notifier_loaded,
        )
    # Item 5 needs the database to itself: no other relay may take its rows.
    procs.stop("notifier-api")
    procs.stop("api")

    # 5. Outbox drain after a Redis outage (a Redis of the harness's own).
    outage = await outage_drain(
        procs,
        database_url=b.database_url,
        run_id=b.run_id,
        rows=plan.outage_rows,
        outage_seconds=plan.outage_seconds,
    )
    table.add(
        f"5. outbox drain: {outage.rows:,} pending rows after Redis is back",
        f"{outage.drained_seconds:.2f} s",
        goal("<= 5 s", outage.drained_seconds <= 5.0),
        f"from Redis's restart to none pending; Redis down {plan.outage_seconds:.0f} s; "
        f"{outage.pending_before:,} pending when it came back; "
        f"{outage.jobs_in_redis:,} jobs in Redis after",
    )
    results.add(outbox_drain_s=outage.drained_seconds)

    # 7a. The BackgroundTasks peer: the same signup load, then the same open loop.
    peer_port = free_port()
    procs.start("peer-fastapi", sys.executable, "-m", "bench.peer_fastapi", str(peer_port))
    background = await signup_peer(
        b,
        "peer-fastapi",
        "7a. BackgroundTasks peer",
        "peer_bgtasks",
        port=peer_port,
        herald=herald,
        herald_e2e=herald_e2e,
        rate=rate,
        ceiling=ceiling,
    )
    procs.stop("peer-fastapi")

    # 7c. The fastapi-users peer: the same again.
    peer_port = free_port()
    procs.start(
        "peer-fastapi-users",
        uv(),
        "run",
        "--locked",
        "--script",
        str(FASTAPI_USERS_PEER),
        "serve",
        str(peer_port),
        env=fastapi_users_env(b.env),
    )
    users = await signup_peer(
        b,
        "peer-fastapi-users",
        "7c. fastapi-users peer",
        "peer_fastapi_users",
        port=peer_port,
        herald=herald,
        herald_e2e=herald_e2e,
        rate=rate,
        ceiling=ceiling,
        endpoint=FASTAPI_USERS_SIGNUP,
    )
    procs.stop("peer-fastapi-users")
    for label, key, peer in (
        ("BackgroundTasks", "bgtasks", background),
        ("fastapi-users", "fastapi_users", users),
    ):
        ratios = {level: herald_rate(herald, level) / herald_rate(peer, level) for level in (8, 32)}
        table.add(
            f"Herald / {label} peer, signups/s at c=8 / c=32",
            " / ".join(f"{ratio:.2f}" for ratio in ratios.values()),
            goal(
                "> 1 at both (Herald stays ahead of every signup peer)",
                all(ratio > 1 for ratio in ratios.values()),
            ),
        )
        results.add(**{f"herald_vs_{key}_c{level}": ratio for level, ratio in ratios.items()})

    # 7b. The arq peer: the same welcome-email job, the same concurrency, the same sink.
    start_arq(b, "arq", b.namespace("arq"))
    await asyncio.sleep(1.0)
    arq_rate = await arq_drain(b, "arq")
    procs.stop("arq")
    table.add(
        f"7b. arq peer: {plan.messages:,} WelcomeEmails, one worker",
        f"{arq_rate:.0f} emails/s",
        note=f"max_jobs {concurrency}; resume -> sink's last accept; no delivery records",
    )
    table.add(
        "Herald notifier / arq peer",
        f"{emails_rate / arq_rate:.2f}",
        goal("> 1 (stay ahead)", emails_rate > arq_rate),
    )
    results.add(arq_emails_per_s=arq_rate, notifier_vs_arq=emails_rate / arq_rate)

    # 8. Redis retention (bench.retention): bytes left per delivered email, and how long
    # the address stays in Redis after its SMTP accept.
    kept = await measure_retention(
        procs,
        b.sink,
        redis_url=b.redis_url,
        namespace=b.namespace("retention"),
        tag=b.tag("retention"),
        emails=plan.retention_emails,
    )
    table.add(
        f"8. Redis bytes per delivered email ({plan.retention_emails} emails)",
        f"{kept['redis_bytes_per_email']:.0f} B",
        goal("<= 300", kept["redis_bytes_per_email"] <= MAX_REDIS_BYTES_PER_EMAIL),
        note="MEMORY USAGE of the namespace after the jobs ended, minus before",
    )
    table.add(
        "   address in Redis after its SMTP accept (max / p50)",
        f"{kept['redis_pii_seconds_after_send']:.3f} / "
        f"{kept['redis_pii_seconds_after_send_p50']:.3f} s",
        goal(
            "<= the stated 1 s window, no key left holding it",
            kept["redis_pii_seconds_after_send"] <= PII_WINDOW_SECONDS
            and kept["redis_pii_keys_left"] == 0,
        ),
    )
    results.update(kept)

    # 9. Flat cost at size (bench.size): every operation on an empty database and at
    # 1,000,000 accounts with 24 h of outbox rows at 100 signups/s (quick: 20,000).
    # Its relay passes run in this process: their info lines would bury the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sized = await measure_size(
        quick=plan is QUICK, database_url=b.database_url, redis_url=b.redis_url
    )
    for operation in SIZE_OPERATIONS:
        ratio = sized[f"size_{operation}_p50_ratio"]
        table.add(
            f"9. at size / empty, p50: {operation.replace('_', ' ')}",
            f"{ratio:.2f}",
            goal("<= 1.5", ratio <= SIZE_GOAL_RATIO),
            note=f"{sized[f'size_{operation}_empty_p50_ms']:.1f} -> "
            f"{sized[f'size_{operation}_p50_ms']:.1f} ms",
        )
    results.update(sized)


def herald_rate(levels: list[LoadResult], concurrency: int) -> float:
    return next(r.rate for r in levels if r.concurrency == concurrency)


def report_overload(b: Bench, crowd: OverloadResult, c8_rate: float) -> None:
    """Item 2b's rows and figures."""
    table, seconds = b.table, b.plan.overload_seconds
    accepted_p50, accepted_p99 = maybe_p(crowd.accepted, 0.5), maybe_p(crowd.accepted, 0.99)
    shed_p50, shed_p99 = maybe_p(crowd.shed, 0.5), maybe_p(crowd.shed, 0.99)
    live_p50, live_p99 = maybe_p(crowd.probes, 0.5), maybe_p(crowd.probes, 0.99)
    vs_c8 = crowd.accepted_rate / c8_rate
    clients = crowd.clients
    if accepted_p50 is None or accepted_p99 is None:
        table.add(f"2b. overload, {clients} clients: accepted", "none", goal("p99 <= 1 s", False))
    else:
        table.add(
            f"2b. overload, {clients} clients for {seconds:.0f} s: accepted",
            f"p50 {ms(accepted_p50)} / p99 {ms(accepted_p99)}; {crowd.accepted_rate:.1f} signups/s",
            goal("p99 <= 1 s", accepted_p99 <= 1.0),
            f"{len(crowd.accepted)} accepted in {crowd.elapsed:.1f} s (until the last answer)",
        )
    table.add(
        "overload: accepted rate / c=8 rate",
        f"{vs_c8:.2f}",
        goal(">= 0.90", vs_c8 >= 0.9),
        f"c=8: {c8_rate:.1f} signups/s",
    )
    retry = "a shed client waits Retry-After (1 s if absent), then sends the same signup again"
    if shed_p50 is None or shed_p99 is None:
        table.add("overload: shed (503)", "none", "p99 <= 50 ms: n/a (nothing shed)", retry)
    else:
        table.add(
            "overload: shed (503)",
            f"{len(crowd.shed)} ({100 * crowd.shed_fraction:.1f}% of answers); "
            f"p50 {ms(shed_p50)} / p99 {ms(shed_p99)}",
            goal("p99 <= 50 ms", shed_p99 <= 0.05),
            f"{retry}; {crowd.shed_without_retry_after} without Retry-After",
        )
    table.add(
        "overload: other 5xx / transport errors",
        f"{crowd.other_5xx} / {crowd.transport_errors}",
        goal("0", crowd.errors == 0),
        f"other answers (4xx): {crowd.other_status}",
    )
    if live_p50 is None or live_p99 is None:
        table.add("overload: /health/live", "no probe", goal("p99 <= 100 ms", False))
    else:
        table.add(
            "overload: /health/live",
            f"p50 {ms(live_p50)} / p99 {ms(live_p99)}",
            goal("p99 <= 100 ms", live_p99 <= 0.1 and crowd.probe_failures == 0),
            f"{len(crowd.probes)} probes, one every 50 ms, a new connection each; "
            f"{crowd.probe_failures} failed",
        )
    key = f"overload_c{clients}"
    b.results.add(
        overload_seconds=seconds,
        **{
            f"{key}_accepted": len(crowd.accepted),
            f"{key}_accepted_per_s": crowd.accepted_rate,
            f"{key}_accepted_vs_c8": vs_c8,
            f"{key}_accepted_p50_ms": None if accepted_p50 is None else 1000 * accepted_p50,
            f"{key}_accepted_p99_ms": None if accepted_p99 is None else 1000 * accepted_p99,
            f"{key}_shed": len(crowd.shed),
            f"{key}_shed_fraction": crowd.shed_fraction,
            f"{key}_shed_p50_ms": None if shed_p50 is None else 1000 * shed_p50,
            f"{key}_shed_p99_ms": None if shed_p99 is None else 1000 * shed_p99,
            f"{key}_other_5xx": crowd.other_5xx,
            f"{key}_transport_errors": crowd.transport_errors,
            f"{key}_health_live_p50_ms": None if live_p50 is None else 1000 * live_p50,
            f"{key}_health_live_p99_ms": None if live_p99 is None else 1000 * live_p99,
            f"{key}_health_live_failures": crowd.probe_failures,
        },
    )


async def signup_peer(
    b: Bench,
    name: str,
    label: str,
    key: str,
    *,
    port: int,
    herald: list[LoadResult],
    herald_e2e: EndToEnd,
    rate: float,
    ceiling: float,
    endpoint: Endpoint = HERALD_SIGNUP,
) -> list[LoadResult]:
    """Items 7a and 7c: a signup peer measured as Herald in items 2 and 4."""
    table = b.table
    async with http_client(port) as client:
        await wait_ready(client, endpoint.path, within=120)  # 405 to a GET once it is up
        peer = await signup_levels(client, b, key.replace("_", ""), endpoint)
        for mine, theirs in zip(herald, peer, strict=True):
            value, note = describe_load(theirs, ceiling)
            table.add(
                f"{label}: signup, concurrency {theirs.concurrency}",
                value,
                note=f"Herald / peer: {mine.rate / theirs.rate:.2f} x the signups/s, "
                f"{mine.p(0.5) / theirs.p(0.5):.2f} x the p50; {note}",
            )
        peer_e2e = await signup_to_smtp(
            client, b, rate=rate, part=f"{key.replace('_', '')}e", endpoint=endpoint
        )
    p50, p99 = herald_e2e.p(0.5), herald_e2e.p(0.99)
    peer_p50, peer_p99 = peer_e2e.p(0.5), peer_e2e.p(0.99)
    table.add(
        f"{label}: signup -> SMTP accepted at {rate:.1f} signups/s",
        f"p50 {ms(peer_p50)} / p99 {ms(peer_p99)}",
        note=f"Herald / peer: {p50 / peer_p50:.2f} x the p50, {p99 / peer_p99:.2f} x the p99; "
        f"{peer_e2e.describe()}; peer RSS after load "
        f"{rss_mib(b.procs.python_pid(name)):.0f} MiB",
    )
    b.results.update(level_figures(key, peer))
    b.results.add(
        **{
            f"{key}_e2e_p50_ms": 1000 * peer_p50,
            f"{key}_e2e_p99_ms": 1000 * peer_p99,
            f"{key}_rss_loaded_mib": rss_mib(b.procs.python_pid(name)),
        }
    )
    return peer


async def queue_drain_seconds(queue: Queue, procs: Processes, name: str, *, within: float) -> float:
    """SIGCONT ``name`` and time until ``queue`` has nothing incomplete."""
    procs.send_signal(name, signal.SIGCONT)
    began = time.perf_counter()
    deadline = began + within
    while await queue.count("incomplete") > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{queue.name} not drained within {within:.0f} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - began


@dataclass(frozen=True)
class EndToEnd:
    latencies: list[float]
    """Request sent -> SMTP accepted."""
    answered: list[float]
    """Request sent -> response."""

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def describe(self) -> str:
        return (
            f"{len(self.latencies)} signups, open loop; answered p50 "
            f"{ms(percentile(self.answered, 0.5))} / p99 {ms(percentile(self.answered, 0.99))}"
        )


async def signup_to_smtp(
    client: httpx.AsyncClient,
    b: Bench,
    *,
    rate: float,
    part: str,
    endpoint: Endpoint = HERALD_SIGNUP,
) -> EndToEnd:
    """Items 4 and 7: signups at ``rate`` for ``latency_seconds``; request -> SMTP accepted."""
    tag = b.tag(part)
    result = await open_loop(
        client, rate=rate, seconds=b.plan.latency_seconds, tag=tag, endpoint=endpoint
    )
    accepted = await b.sink.wait(tag, result.ok, within=60)
    return EndToEnd(e2e_latencies(result.sent, accepted), result.answered)


# --- profiles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    path: Path
    units: int
    """How many signups or emails the recorded process handled meanwhile."""
    unit: str


async def profile(b: Bench) -> list[Recording]:
    """py-spy on the API at concurrency 8 and 1, the notifier's drain and the arq peer's."""
    PROFILES.mkdir(exist_ok=True)
    procs = b.procs
    recordings = []
    api_port = int(b.env["HERALD_API_PORT"])
    procs.start(
        "api",
        str(BIN / "herald-api"),
        "serve",
        env=b.env | {"HERALD_QUEUE_NAMESPACE": b.namespace("api")},
    )
    async with http_client(api_port) as client:
        await wait_ready(client, "/health/ready")
        await closed_loop(client, concurrency=4, seconds=2.0, tag=b.tag("warm"))
        for level in (8, 1):
            output = PROFILES / f"api-signup-c{level}.txt"
            recorder = start_recording(procs, "api", procs.pid("api"), output)
            result = await closed_loop(
                client, concurrency=level, seconds=b.plan.load_seconds, tag=b.tag(f"s{level}")
            )
            stop_recording(procs, recorder, output)
            recordings.append(Recording(output, len(result.latencies), "signup"))
            print(
                f"[bench] profiled api: {result.rate:.1f} signups/s at c={level}, "
                f"p50 {ms(result.p(0.5))}",
                file=sys.stderr,
            )
    procs.stop("api")

    start_notifier(b, "notifier", b.namespace("notifier"))
    output = PROFILES / f"notifier-{b.plan.messages}.txt"
    queue = queues.connect_queue(b.redis_url, queues.NOTIFIER, namespace=b.namespace("notifier"))
    await queue.connect()
    tag = b.tag("n")

    async def fill_notifier() -> None:
        await enqueue_welcomes(queue, b.plan.messages, tag)
        start_recording(procs, "notifier", procs.pid("notifier"), output)

    try:
        rate = await drain_to_sink(b, "notifier", tag, fill_notifier)
    finally:
        await queue.disconnect()
    stop_recording(procs, "py-spy-notifier", output)
    recordings.append(Recording(output, b.plan.messages, "email"))
    procs.stop("notifier")
    print(f"[bench] profiled notifier: {rate:.0f} emails/s", file=sys.stderr)

    start_arq(b, "arq", b.namespace("arq"))
    output = PROFILES / f"arq-{b.plan.messages}.txt"
    tag = b.tag("a")

    async def fill_arq() -> None:
        await run_arq_enqueue(b, b.namespace("arq"), tag)
        start_recording(procs, "arq", procs.python_pid("arq"), output)

    rate = await drain_to_sink(b, "arq", tag, fill_arq)
    stop_recording(procs, "py-spy-arq", output)
    recordings.append(Recording(output, b.plan.messages, "email"))
    procs.stop("arq")
    print(f"[bench] profiled arq peer: {rate:.0f} emails/s", file=sys.stderr)
    return recordings


# --- the run -----------------------------------------------------------------------------


async def forget_namespace(redis_url: str, pattern: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        return await delete_keys(client, pattern)
    finally:
        await client.aclose()


def git_commit() -> str:
    """The commit the run measured, ``+dirty`` if the work tree had changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown CPU"


async def run(b: Bench, *, profiling: bool) -> list[Recording]:
    smtp_port = int(b.env["HERALD_SMTP_PORT"])
    b.procs.start("sink", sys.executable, "-m", "bench.sink", str(smtp_port), str(b.sink.path))
    wait_for_port("127.0.0.1", smtp_port, what="SMTP sink")
    if profiling:
        return await profile(b)
    await measure(b)
    return []


def prepare_script_peers(env: dict[str, str], log_dir: Path) -> None:
    """The script peers' own environments (``bench/*_peer.py.lock``), made before any timing."""
    for script in (ARQ_PEER, FASTAPI_USERS_PEER):
        with (log_dir / f"{script.stem}-env.log").open("wb") as log:
            subprocess.run(  # noqa: S603  (our own command)
                [uv(), "run", "--locked", "--script", str(script), "check"],
                env=env | {"PYTHONPATH": herald_sources()},
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny sizes: check the harness")
    mode.add_argument(
        "--profile", action="store_true", help="py-spy profiles to bench/profiles/, no table"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help=f"where to write the figures as JSON (default {RESULTS.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    run_id = uuid.uuid4().hex[:8]
    base_url = make_url(os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL))
    database = f"herald_bench_{run_id}"
    database_url = base_url.set(drivername="postgresql", database=database).render_as_string(
        hide_password=False
    )
    redis_url = os.environ.get("HERALD_REDIS_URL", DEFAULT_REDIS_URL)
    log_dir = Path(tempfile.mkdtemp(prefix=f"herald-bench-{run_id}-"))
    env = dict(os.environ) | {
        "HERALD_DATABASE_URL": database_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_API_PORT": str(free_port()),
        "HERALD_SMTP_HOST": "127.0.0.1",
        "HERALD_SMTP_PORT": str(free_port()),
        "HERALD_METRICS_PORT": "0",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "2",
        # Fresh secrets for this run only; the API and the notifier share the link secret.
        "HERALD_LINK_SECRET": secrets.token_urlsafe(48),
        "HERALD_JWT_SECRET": secrets.token_urlsafe(48),
        # 10 signups a minute per client would stop the load at once.
        "HERALD_RATE_LIMITS_ENABLED": "false",
    }
    os.environ.update(
        {k: env[k] for k in ("HERALD_LINK_SECRET", "HERALD_JWT_SECRET")}
    )  # for ApiSettings() in this process
    if args.profile:
        keep_py_spy(log_dir)
    load_before = os.getloadavg()
    print(f"[bench] run {run_id}; logs in {log_dir}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    migrate(env, log_dir / "migrate.log")
    prepare_script_peers(env, log_dir)
    procs = Processes(env=env, log_dir=log_dir)
    table = Table()
    results = Results()
    bench = Bench(
        plan,
        procs,
        table,
        run_id,
        database_url,
        SinkLog(log_dir / "sink-accepted.tsv"),
        results,
    )
    recordings: list[Recording] = []
    try:
        recordings = asyncio.run(run(bench, profiling=args.profile))
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            asyncio.run(admin(database_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        with contextlib.suppress(Exception):
            asyncio.run(forget_namespace(redis_url, f"*bench_{run_id}_*"))
    load_after = os.getloadavg()
    machine = (
        f"{os.cpu_count()} cores, {cpu_model()}; load average (1/5/15 min) "
        f"{' '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.2f}' for x in load_after)} after"
    )
    if args.profile:
        for rec in recordings:
            summary = profile_report.report(
                profile_report.parse(rec.path.read_text()),
                per=(rec.units, rec.unit),
                rate=RATE,
            )
            rec.path.with_suffix(".report.txt").write_text(summary + "\n")
            print(f"== {rec.path.relative_to(ROOT)}\n{summary}\n")
        print(f"{machine}; total {time.perf_counter() - started:.0f} s")
        return 0
    total = time.perf_counter() - started
    results.write(
        args.results,
        {
            "mode": "quick" if args.quick else "full",
            "commit": git_commit(),
            "machine": machine,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "total_s": round(total, 1),
        },
    )
    print(table.render())
    print(
        f"\n{machine}. Load generator: httpx.AsyncClient with N concurrent asyncio tasks "
        f"on the same machine; total {total:.0f} s"
    )
    missing = results.missing()
    print(
        f"Figures written to {args.results}"
        + (f"; not measured by this run: {', '.join(missing)}" if missing else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

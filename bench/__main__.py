"""``make bench``: Herald's speed, measured on the real local services; one table.

    uv run --group bench python -m bench [--quick]

What it starts, all on this machine: a fresh PostgreSQL database
``herald_bench_<id>`` (migrated by ``herald-api migrate``; dropped at the end),
queue namespaces ``bench_<id>_*`` on the local Redis (their keys deleted at the
end), an aiosmtpd sink that accepts and discards (``bench.sink``, its own
process), ``herald-api serve`` (uvicorn, as Herald runs it) and one
``herald-notifier`` process. The HTTP load generator is one
``httpx.AsyncClient`` driven by N concurrent asyncio tasks in this process,
which shares the machine's cores with the servers.

Measured:

1. argon2id hash time with Herald's parameters (median of N, this process);
2. signups: p50 / p99 latency and signups/s at concurrency 1, 8, 32 (the
   notifier is not running meanwhile; its jobs wait in Redis);
3. notifier: 5,000 WelcomeEmails enqueued while the notifier is paused
   (SIGSTOP), then drained by the one process (SIGCONT to an empty queue);
   the same for 5,000 no-op jobs and a plain SAQ worker of the same
   concurrency;
4. signup -> SMTP accepted latency at half the best signups/s (open loop);
6. RSS of the api and notifier processes, idle and after their load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from argon2 import PasswordHasher, Type
from saq import Queue
from sqlalchemy.engine import make_url

from herald_api.settings import Settings as ApiSettings
from herald_notifier.settings import Settings as NotifierSettings
from herald_shared import queues
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import enqueue
from herald_testing.ports import free_port, wait_for_port

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/herald"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark account's password)


# --- numbers -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Table:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, measure: str, value: str, note: str = "") -> None:
        self.rows.append((measure, value, note))
        print(f"[bench] {measure}: {value}  {note}", file=sys.stderr, flush=True)

    def render(self) -> str:
        lines = ["| measure | value | notes |", "| --- | --- | --- |"]
        lines += [f"| {m} | {v} | {n} |" for m, v, n in self.rows]
        return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------


@dataclass
class Processes:
    env: dict[str, str]
    log_dir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *command: str, env: Mapping[str, str] | None = None) -> int:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603  (our own commands)
            command,
            env=dict(env or self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running[name] = proc
        return proc.pid

    def pid(self, name: str) -> int:
        return self.running[name].pid

    def wait_log(self, name: str, text: str, *, within: float = 30.0) -> None:
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + within
        while text not in path.read_text(errors="replace"):
            if self.running[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not log {text!r} within {within:.0f} s")
            time.sleep(0.05)

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.running[name].send_signal(sig)

    def stop(self, name: str) -> None:
        proc = self.running.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


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


# --- 2. signups --------------------------------------------------------------------------


@dataclass
class LoadResult:
    concurrency: int
    latencies: list[float]
    errors: int
    elapsed: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed


def signup_body(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "display_name": "Bench User"}


async def closed_loop(
    client: httpx.AsyncClient, *, concurrency: int, seconds: float, tag: str
) -> LoadResult:
    """``concurrency`` tasks each signing up back to back for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def user(worker: int) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            began = time.perf_counter()
            response = await client.post(
                "/api/v1/users", json=signup_body(f"{tag}-c{concurrency}-{worker}-{n}@example.com")
            )
            if response.status_code == 201:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(concurrency)))
    return LoadResult(concurrency, latencies, errors, time.perf_counter() - began)


# --- 3. queue drains ---------------------------------------------------------------------


async def drain_seconds(queue: Queue, resume: Processes, name: str, *, within: float) -> float:
    """SIGCONT ``name`` and time until ``queue`` has nothing incomplete."""
    resume.signal(name, signal.SIGCONT)
    began = time.perf_counter()
    deadline = began + within
    while await queue.count("incomplete") > 0:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{queue.name} not drained within {within:.0f} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - began


async def enqueue_welcomes(queue: Queue, count: int, tag: str) -> None:
    for start in range(0, count, 250):
        await asyncio.gather(
            *(
                enqueue(
                    queue,
                    WelcomeEmail(
                        user_id=uuid.uuid4(),
                        email=f"{tag}-q{i}@example.com",
                        display_name="Bench User",
                    ),
                )
                for i in range(start, min(count, start + 250))
            )
        )


async def enqueue_noops(queue: Queue, count: int) -> None:
    for start in range(0, count, 250):
        await asyncio.gather(
            *(queue.enqueue("noop") for _ in range(start, min(count, start + 250)))
        )


def sink_lines(path: Path, marker: str) -> dict[str, float]:
    """Recipients containing ``marker`` the sink accepted, with when."""
    accepted: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rcpt, _, stamp = line.partition("\t")
            if marker in rcpt and stamp:
                accepted.setdefault(rcpt.lower(), float(stamp))
    return accepted


async def wait_sink(path: Path, marker: str, count: int, *, within: float) -> dict[str, float]:
    deadline = time.monotonic() + within
    while len(accepted := sink_lines(path, marker)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"sink got {len(accepted)} of {count} {marker} emails")
        await asyncio.sleep(0.1)
    return accepted


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    hash_samples: int
    load_seconds: float
    messages: int
    latency_seconds: float


FULL = Plan(hash_samples=30, load_seconds=15.0, messages=5000, latency_seconds=20.0)
QUICK = Plan(hash_samples=5, load_seconds=3.0, messages=300, latency_seconds=4.0)


async def admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(make_url(url).set(database="postgres").render_as_string(False))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def forget_namespace(redis_url: str, pattern: str) -> int:
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def measure(plan: Plan, procs: Processes, table: Table, run_id: str) -> None:  # noqa: PLR0915
    env = procs.env
    redis_url = env["HERALD_REDIS_URL"]
    cores = os.cpu_count() or 1
    smtp_port = int(env["HERALD_SMTP_PORT"])
    sink_log = procs.log_dir / "sink-accepted.tsv"
    concurrency = NotifierSettings().notifier_concurrency

    # 1. Hash floor.
    hash_s = hash_floor(plan.hash_samples)
    ceiling = cores / hash_s
    table.add(
        "argon2id hash (m=19456 KiB, t=2, p=1)",
        ms(hash_s),
        f"median of {plan.hash_samples}, one thread",
    )
    table.add("hash-bound ceiling", f"{ceiling:.1f} signups/s", f"{cores} cores / hash time")

    # The SMTP sink and the API (namespace A); the notifier is not running yet.
    procs.start("sink", sys.executable, "-m", "bench.sink", str(smtp_port), str(sink_log))
    wait_for_port("127.0.0.1", smtp_port, what="SMTP sink")
    api_ns = f"bench_{run_id}_api"
    api_port = int(env["HERALD_API_PORT"])
    procs.start(
        "api", str(BIN / "herald-api"), "serve", env=env | {"HERALD_QUEUE_NAMESPACE": api_ns}
    )
    base_url = f"http://127.0.0.1:{api_port}"
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/health/ready")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("API not ready within 30 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        api_idle = rss_mib(procs.pid("api"))

        # 2. Signups at concurrency 1, 8, 32 (after a short warm-up).
        await closed_loop(client, concurrency=4, seconds=2.0, tag=f"warm{run_id}")
        results = []
        for level in (1, 8, 32):
            result = await closed_loop(
                client, concurrency=level, seconds=plan.load_seconds, tag=f"s{run_id}"
            )
            results.append(result)
            p50 = percentile(result.latencies, 0.5)
            table.add(
                f"signup, concurrency {level}",
                f"p50 {ms(p50)} / p99 {ms(percentile(result.latencies, 0.99))}; "
                f"{result.rate:.1f} signups/s ({100 * result.rate / ceiling:.0f}% of ceiling)",
                f"{len(result.latencies)} signups in {result.elapsed:.1f} s"
                + (f", {result.errors} errors" if result.errors else ""),
            )
        overhead = percentile(results[0].latencies, 0.5) - hash_s
        table.add("API overhead (signup p50 at c=1 - hash)", ms(overhead))
        api_loaded = rss_mib(procs.pid("api"))
        best_rate = max(r.rate for r in results)

        # 3. Notifier throughput (namespace B), then raw SAQ (namespace C).
        notifier_ns = f"bench_{run_id}_notifier"
        notifier_env = env | {"HERALD_QUEUE_NAMESPACE": notifier_ns}
        procs.start("notifier-drain", str(BIN / "herald-notifier"), env=notifier_env)
        procs.wait_log("notifier-drain", "notifier.started")
        await asyncio.sleep(1.0)
        notifier_idle = rss_mib(procs.pid("notifier-drain"))
        procs.signal("notifier-drain", signal.SIGSTOP)
        queue = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=notifier_ns)
        await queue.connect()
        try:
            await enqueue_welcomes(queue, plan.messages, f"n{run_id}")
            drained = await drain_seconds(queue, procs, "notifier-drain", within=300)
        finally:
            await queue.disconnect()
        await wait_sink(sink_log, f"n{run_id}-q", plan.messages, within=30)
        notifier_loaded = rss_mib(procs.pid("notifier-drain"))
        procs.stop("notifier-drain")
        emails_rate = plan.messages / drained
        table.add(
            f"notifier: {plan.messages:,} WelcomeEmails, one process",
            f"{emails_rate:.0f} emails/s",
            f"{drained:.2f} s to drain; concurrency {concurrency}; aiosmtpd discard sink",
        )

        saq_name = queues.queue_name("noop", namespace=f"bench_{run_id}_saq")
        procs.start(
            "saq-noop", sys.executable, "-m", "bench.noop_worker", saq_name, str(concurrency)
        )
        procs.wait_log("saq-noop", "ready")
        await asyncio.sleep(1.0)
        procs.signal("saq-noop", signal.SIGSTOP)
        raw = Queue.from_url(redis_url, name=saq_name)
        await raw.connect()
        try:
            await enqueue_noops(raw, plan.messages)
            raw_drained = await drain_seconds(raw, procs, "saq-noop", within=300)
        finally:
            await raw.disconnect()
        procs.stop("saq-noop")
        raw_rate = plan.messages / raw_drained
        table.add(
            f"raw SAQ: {plan.messages:,} no-op jobs, one worker",
            f"{raw_rate:.0f} jobs/s",
            f"{raw_drained:.2f} s to drain; concurrency {concurrency}",
        )
        table.add("notifier / raw SAQ", f"{emails_rate / raw_rate:.2f}")

        # 4. Signup -> SMTP accepted at half the best signups/s (namespace A's notifier).
        procs.start(
            "notifier", str(BIN / "herald-notifier"), env=env | {"HERALD_QUEUE_NAMESPACE": api_ns}
        )
        procs.wait_log("notifier", "notifier.started")
        backlog = queues.connect_queue(redis_url, queues.NOTIFIER, namespace=api_ns)
        await backlog.connect()
        try:
            deadline = time.monotonic() + 180
            # The signups' welcome emails go first.
            while time.monotonic() < deadline:
                if await backlog.count("incomplete") == 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            await backlog.disconnect()
        rate = best_rate / 2
        total = max(1, int(rate * plan.latency_seconds))
        sent: dict[str, float] = {}
        statuses: list[int] = []

        async def one(email: str) -> None:
            sent[email] = time.time()
            statuses.append(
                (await client.post("/api/v1/users", json=signup_body(email))).status_code
            )

        began = time.perf_counter()
        tasks = []
        for i in range(total):
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(f"l{run_id}-{i}@example.com")))
        await asyncio.gather(*tasks)
        ok = statuses.count(201)
        accepted = await wait_sink(sink_log, f"l{run_id}-", ok, within=60)
        e2e = [accepted[email] - at for email, at in sent.items() if email in accepted]
        table.add(
            f"signup -> SMTP accepted at {rate:.1f} signups/s",
            f"p50 {ms(percentile(e2e, 0.5))} / p99 {ms(percentile(e2e, 0.99))}",
            f"{len(e2e)} signups, open loop, {plan.latency_seconds:.0f} s; notifier running",
        )
        table.add(
            "RSS api",
            f"idle {api_idle:.0f} MiB / after load {rss_mib(procs.pid('api')):.0f} MiB",
            f"after the signup runs: {api_loaded:.0f} MiB",
        )
        table.add(
            "RSS notifier",
            f"idle {notifier_idle:.0f} MiB / after load {notifier_loaded:.0f} MiB",
            f"after {plan.messages:,} emails; item 4's notifier after its load: "
            f"{rss_mib(procs.pid('notifier')):.0f} MiB",
        )
    table.add("5. outbox drain after an outage", "not yet measured")
    table.add("7. peers (BackgroundTasks, arq, Celery)", "not yet measured")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check the harness")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    run_id = uuid.uuid4().hex[:8]
    base_url = make_url(os.environ.get("HERALD_DATABASE_URL", DEFAULT_DATABASE_URL))
    database_url = base_url.set(database=f"herald_bench_{run_id}").render_as_string(
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
    }
    print(f"[bench] run {run_id}; logs in {log_dir}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    with (log_dir / "migrate.log").open("wb") as log:
        subprocess.run(  # noqa: S603  (our own command)
            [str(BIN / "herald-api"), "migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    procs = Processes(env=env, log_dir=log_dir)
    table = Table()
    try:
        asyncio.run(measure(plan, procs, table, run_id))
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            asyncio.run(
                admin(database_url, f'DROP DATABASE IF EXISTS "herald_bench_{run_id}" WITH (FORCE)')
            )
        with contextlib.suppress(Exception):
            asyncio.run(forget_namespace(redis_url, f"*bench_{run_id}_*"))
    print(table.render())
    print(
        f"\n{os.cpu_count()} cores; load generator: httpx.AsyncClient with N concurrent "
        f"asyncio tasks on the same machine; total {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

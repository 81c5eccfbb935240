"""What every part of the harness uses: numbers, the table, processes, the sink's log, load."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark account's password)


# --- numbers -----------------------------------------------------------------------------


def migrate(env: Mapping[str, str], log: Path) -> None:
    """``herald-api migrate`` on ``env``'s HERALD_DATABASE_URL, its output appended to ``log``."""
    with log.open("ab") as out:
        subprocess.run(  # noqa: S603  (our own command)
            [str(BIN / "herald-api"), "migrate"],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )


async def delete_keys(redis: aioredis.Redis, pattern: str) -> int:
    """Delete every key matching ``pattern`` (a run's namespaces); how many there were."""
    keys = [key async for key in redis.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 500):
        await redis.delete(*keys[start : start + 500])
    return len(keys)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def goal(text: str, met: bool) -> str:
    return f"{text}: {'met' if met else 'NOT met'}"


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def add(self, measure: str, value: str, goal: str = "", note: str = "") -> None:
        self.rows.append((measure, value, goal, note))
        at = time.perf_counter() - self.started
        print(
            f"[bench +{at:.0f} s] {measure}: {value}  {goal}  {note}",
            file=sys.stderr,
            flush=True,
        )

    def render(self) -> str:
        lines = ["| measure | value | goal | notes |", "| --- | --- | --- | --- |"]
        lines += [f"| {m} | {v} | {g} | {n} |" for m, v, g, n in self.rows]
        return "\n".join(lines)


# --- processes ---------------------------------------------------------------------------


def uv() -> str:
    """The uv executable (``uv run`` tells its children where it is)."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise RuntimeError("uv not found: run the harness with `uv run`")
    return found


@dataclass
class Processes:
    """Processes the harness started, each the leader of its own process group."""

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
            cwd=ROOT,
        )
        self.running[name] = proc
        return proc.pid

    def pid(self, name: str) -> int:
        return self.running[name].pid

    def python_pid(self, name: str) -> int:
        """The pid of the Python process of ``name``: itself, or the child ``uv run`` made."""
        pid = self.pid(name)
        exe = Path(f"/proc/{pid}/exe").resolve().name
        if not exe.startswith("uv"):
            return pid
        # uv may fork from any of its threads: each thread lists its own children.
        children = [
            child
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
        if not children:
            raise RuntimeError(f"{name}: uv has no child process yet")
        return int(children[0])

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def wait_log(self, name: str, text: str, *, within: float = 60.0) -> None:
        path = self.log(name)
        deadline = time.monotonic() + within
        while text not in path.read_text(errors="replace"):
            if self.running[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {path}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not log {text!r} within {within:.0f} s")
            time.sleep(0.05)

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to ``name``'s whole process group (``uv run`` and its child)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.running[name].pid, sig)

    def stop(self, name: str, *, sig: signal.Signals = signal.SIGTERM) -> None:
        proc = self.running.pop(name)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)


# --- the SMTP sink's log -----------------------------------------------------------------


def recipient(tag: str, n: int) -> str:
    """The address of the ``n``th email of ``tag`` (a tag has no ``-``)."""
    return f"{tag}-{n}@example.com"


class SinkLog:
    """What the sink accepted (``bench.sink`` writes ``recipient<TAB>unix time``), by tag."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.by_tag: dict[str, dict[str, float]] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            rcpt, _, stamp = line.decode().partition("\t")
            rcpt = rcpt.lower()
            tag = rcpt.partition("@")[0].rpartition("-")[0]
            self.by_tag.setdefault(tag, {}).setdefault(rcpt, float(stamp))

    def accepted(self, tag: str) -> dict[str, float]:
        self.poll()
        return self.by_tag.get(tag, {})

    async def wait(self, tag: str, count: int, *, within: float) -> dict[str, float]:
        """When each of ``count`` emails of ``tag`` was accepted (unix time)."""
        deadline = time.monotonic() + within
        while len(accepted := self.accepted(tag)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink got {len(accepted)} of {count} {tag} emails")
            await asyncio.sleep(0.05)
        return accepted


# --- HTTP load ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where a server takes a signup, and the status that means "signed up"."""

    path: str
    ok: int


HERALD_SIGNUP = Endpoint("/api/v1/users", 202)
FASTAPI_USERS_SIGNUP = Endpoint("/auth/register", 201)


SHED = 503
"""Herald's admission control turned the request away: wait ``Retry-After``, then retry."""
DEFAULT_RETRY_AFTER = 1.0
"""Seconds a shed client waits when the 503 has no usable ``Retry-After``."""
RETRY_JITTER = 0.5
"""A shed client waits Retry-After x (1 + uniform(0, RETRY_JITTER))."""


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass
class LoadResult:
    concurrency: int
    latencies: list[float]
    errors: int
    elapsed: float
    shed: int = 0
    """503s from admission control (the client waited ``Retry-After`` and went on)."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def signup_body(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "display_name": "Bench User"}


async def wait_ready(client: httpx.AsyncClient, path: str, *, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(path)).status_code in (200, 405):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{client.base_url}{path} not ready within {within:.0f} s")
        await asyncio.sleep(0.1)


async def closed_loop(
    client: httpx.AsyncClient,
    *,
    concurrency: int,
    seconds: float,
    tag: str,
    endpoint: Endpoint = HERALD_SIGNUP,
) -> LoadResult:
    """``concurrency`` tasks each signing up back to back for ``seconds``; a shed one
    (503) waits its ``Retry-After``, as a well-behaved client does, and goes on."""
    latencies: list[float] = []
    errors = shed = 0
    deadline = time.perf_counter() + seconds
    jitter = random.Random(concurrency)  # noqa: S311 (spreading retries, not a secret)

    async def user(worker: int) -> None:
        nonlocal errors, shed
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            began = time.perf_counter()
            email = recipient(tag, worker * 1_000_000 + n)
            response = await client.post(endpoint.path, json=signup_body(email))
            if response.status_code == endpoint.ok:
                latencies.append(time.perf_counter() - began)
            elif response.status_code == SHED:
                shed += 1
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = (wait if wait is not None else DEFAULT_RETRY_AFTER) * (
                    1 + jitter.uniform(0, RETRY_JITTER)
                )
                await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))
            else:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(concurrency)))
    return LoadResult(concurrency, latencies, errors, time.perf_counter() - began, shed)


@dataclass
class OpenLoopResult:
    sent: dict[str, float]
    """Each address signed up, with when its request was sent (unix time)."""
    answered: list[float]
    """Each successful request's latency (seconds)."""
    ok: int
    errors: int


async def open_loop(
    client: httpx.AsyncClient,
    *,
    rate: float,
    seconds: float,
    tag: str,
    endpoint: Endpoint = HERALD_SIGNUP,
) -> OpenLoopResult:
    """Signups at a fixed ``rate`` for ``seconds``, each sent on time whatever the answers."""
    total = max(1, int(rate * seconds))
    sent: dict[str, float] = {}
    answered: list[float] = []
    statuses: list[int] = []

    async def one(email: str) -> None:
        sent[email] = time.time()
        began = time.perf_counter()
        try:
            status = (await client.post(endpoint.path, json=signup_body(email))).status_code
        except httpx.HTTPError:
            status = 0
        statuses.append(status)
        if status == endpoint.ok:
            answered.append(time.perf_counter() - began)

    began = time.perf_counter()
    tasks = []
    for i in range(total):
        await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(recipient(tag, i))))
    await asyncio.gather(*tasks)
    ok = statuses.count(endpoint.ok)
    return OpenLoopResult(sent, answered, ok, len(statuses) - ok)


def e2e_latencies(sent: Mapping[str, float], accepted: Mapping[str, float]) -> list[float]:
    """Request sent -> SMTP accepted, for every address the sink accepted."""
    return [accepted[email] - at for email, at in sent.items() if email in accepted]

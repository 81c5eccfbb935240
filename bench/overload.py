"""Overload: many more signup clients than the API has cores, and a liveness prober meanwhile.

``clients`` tasks sign up back to back for ``seconds`` (a closed loop, each
with an ``httpx.AsyncClient`` and a connection of its own: one client's pool of
256 connections costs the load generator seconds per round of requests,
httpcore scanning its pool for each one), the clients starting evenly over the first
``ramp_seconds`` (as load tools ramp up: 256 requests sent in the same
millisecond measure that millisecond, not overload). A ``503`` is the API
shedding load (issue 13's admission control), not an error: the client waits
what ``Retry-After`` says (1 s if it is missing or unreadable) plus up to half
as much again at random, as well-behaved clients add jitter so that retries do
not arrive in step, never past the run's end, and sends the same signup again.
Any other ``5xx`` and any transport error (a timeout, a reset) is an error.

Meanwhile a prober in a process of its own (as a kubelet is: no GIL or event
loop shared with the load generator; a new connection per probe with
``Connection: close``, as its ``httpGet`` probe) GETs ``/health/live`` every
``probe_interval`` seconds, from before the first signup until the last one is
answered.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import ssl
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import httpx

from bench.common import (
    DEFAULT_RETRY_AFTER,
    HERALD_SIGNUP,
    RETRY_JITTER,
    SHED,
    Endpoint,
    percentile,
    recipient,
    retry_after_seconds,
    signup_body,
)

PROBE_TIMEOUT = 10.0


@dataclass
class OverloadResult:
    clients: int
    accepted: list[float] = field(default_factory=list)
    """Each accepted signup's latency (seconds): the last attempt only."""
    shed: list[float] = field(default_factory=list)
    """Each 503's latency (seconds)."""
    shed_without_retry_after: int = 0
    other_5xx: int = 0
    other_status: int = 0
    """Answers that are neither the signup's success, a 503 nor another 5xx (4xx)."""
    transport_errors: int = 0
    elapsed: float = 0.0
    probes: list[float] = field(default_factory=list)
    """Each /health/live probe's latency (seconds), failed probes included."""
    probe_failures: int = 0

    @property
    def answered(self) -> int:
        return len(self.accepted) + len(self.shed) + self.other_5xx + self.other_status

    @property
    def accepted_rate(self) -> float:
        return len(self.accepted) / self.elapsed

    @property
    def shed_fraction(self) -> float:
        """Shed answers over all answers (accepted, shed, other)."""
        return len(self.shed) / self.answered if self.answered else 0.0

    @property
    def errors(self) -> int:
        return self.other_5xx + self.transport_errors


def probe_live(base_url: str, interval: float, ready: Event, stop: Event, out: Connection) -> None:
    """GET /health/live every ``interval`` s until ``stop``; send (latencies, failures)
    to ``out``. ``ready`` is set once the first probe is answered."""
    latencies: list[float] = []
    failures = 0
    with httpx.Client(
        base_url=base_url, timeout=PROBE_TIMEOUT, headers={"Connection": "close"}
    ) as client:
        due = time.perf_counter()
        while not stop.is_set():
            began = time.perf_counter()
            try:
                healthy = client.get("/health/live").status_code == httpx.codes.OK
            except httpx.HTTPError:
                healthy = False
            latencies.append(time.perf_counter() - began)
            failures += not healthy
            ready.set()
            due += interval
            stop.wait(max(0.0, due - time.perf_counter()))
    out.send((latencies, failures))
    out.close()


class Prober:
    """``probe_live`` in a spawned process."""

    def __init__(self, base_url: str, interval: float) -> None:
        spawn = multiprocessing.get_context("spawn")
        self._ready, self._stop = spawn.Event(), spawn.Event()
        self._received, sent = spawn.Pipe(duplex=False)
        self._process = spawn.Process(
            target=probe_live, args=(base_url, interval, self._ready, self._stop, sent), daemon=True
        )
        self._sent = sent

    async def start(self) -> None:
        self._process.start()
        self._sent.close()
        deadline = time.monotonic() + 30
        while not await asyncio.to_thread(self._ready.wait, 0.1):
            if not self._process.is_alive() or time.monotonic() > deadline:
                self._process.kill()
                raise RuntimeError("the /health/live prober exited or got no answer in 30 s")

    async def stop(self) -> tuple[list[float], int]:
        """Stop probing; (latencies, failures)."""
        self._stop.set()
        probes: tuple[list[float], int] = ([], 0)
        if await asyncio.to_thread(self._received.poll, PROBE_TIMEOUT + 5):
            probes = self._received.recv()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
        return probes


async def overload(
    base_url: str,
    *,
    clients: int,
    seconds: float,
    tag: str,
    endpoint: Endpoint = HERALD_SIGNUP,
    ramp_seconds: float = 1.0,
    probe_interval: float = 0.05,
) -> OverloadResult:
    result = OverloadResult(clients)
    prober = Prober(base_url, probe_interval)
    await prober.start()
    tls = ssl.create_default_context()  # unused on http://, but httpx makes one per client
    jitter = random.Random(0)  # noqa: S311  (retry jitter, not a secret)

    async def user(client: httpx.AsyncClient, worker: int) -> None:
        await asyncio.sleep(worker * ramp_seconds / clients)
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            body = signup_body(recipient(tag, worker * 1_000_000 + n))
            while True:  # the same signup again after each 503, until the run ends
                began = time.perf_counter()
                try:
                    response = await client.post(endpoint.path, json=body)
                except httpx.HTTPError:
                    result.transport_errors += 1
                    break
                took = time.perf_counter() - began
                if response.status_code == endpoint.ok:
                    result.accepted.append(took)
                    break
                if response.status_code != SHED:
                    if response.status_code >= httpx.codes.INTERNAL_SERVER_ERROR:
                        result.other_5xx += 1
                    else:
                        result.other_status += 1
                    break
                result.shed.append(took)
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None:
                    result.shed_without_retry_after += 1
                    wait = DEFAULT_RETRY_AFTER
                wait *= 1 + jitter.uniform(0, RETRY_JITTER)
                await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))
                if time.perf_counter() >= deadline:
                    break

    try:
        async with AsyncExitStack() as stack:
            own = [
                await stack.enter_async_context(
                    httpx.AsyncClient(base_url=base_url, timeout=60, verify=tls)
                )
                for _ in range(clients)
            ]
            began = time.perf_counter()
            deadline = began + seconds
            await asyncio.gather(*(user(client, i) for i, client in enumerate(own)))
            result.elapsed = time.perf_counter() - began
    finally:
        result.probes, result.probe_failures = await prober.stop()
    return result


def p(values: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``values``, or None when there are none."""
    return percentile(values, q) if values else None

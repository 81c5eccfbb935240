"""How ``make chaos`` injects its faults into a running compose project.

- **Redis** is stopped (``docker compose stop``) and started again after the
  plan's outage;
- **the API** is SIGKILLed (``docker kill -s KILL``) mid-signups and started
  again (``docker start``: a killed container is not restarted by its restart
  policy); requests in flight get no answer and the client retries them;
- **PostgreSQL** is restarted (``docker compose restart --timeout 3``: its
  fast shutdown, SIGKILL after 3 s, then a start); meanwhile the API answers
  503 and the client retries;
- **both notifier replicas** are SIGKILLed at once, then started again;
- **a notifier replica is SIGKILLed while it sweeps**: one replica is killed,
  its sibling's log is followed until it logs ``Sweeping job`` (the line a
  sweep logs as it takes a stuck job on), and the sibling is SIGKILLed at once;
  both are then started again. A replica killed while it held no job leaves
  nothing to sweep: then it is tried again (up to 3 times), the other first.

Before each planned kill the victim's counters are read (``CounterAcrossRestarts``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from herald_testing.chaos_plan import FaultPlan
from herald_testing.compose import Compose
from herald_testing.prometheus import CounterAcrossRestarts, sample_sum

SWEEP_LINE = "Sweeping job"
"""What a notifier logs as its sweep starts aborting a stuck job (SAQ's own line)."""
SWEEP_WAIT_SECONDS = 60.0
"""How long the sweeper kill waits for the surviving replica to sweep (heartbeat
10 s + sweep 5 s, and more while Redis is down)."""
SWEEP_TRIES = 3
NOTIFIER_METRICS_PORT = 9101
API_METRICS_PORT = 9100
POSSIBLE_DUPLICATES_SAMPLE = "herald_notifier_possible_duplicates_total"
RECONCILED_SAMPLE = "herald_api_outbox_reconciled_total"
RECONCILED_LABELS = {"outcome": "repushed"}
SCRAPE = (
    "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen({!r}).read().decode())"
)


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    service: str

    @property
    def replica(self) -> int:
        """Compose's replica number (``...-notifier-2`` is 2)."""
        return int(self.name.rsplit("-", 1)[1])


@dataclass
class Progress:
    """How many of the run's signups have finished (accepted or given up)."""

    total: int
    finished: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def advance(self) -> None:
        self.finished += 1
        self.changed.set()

    async def reached(self, share: float) -> None:
        """Return once ``share`` (0..1) of the signups have finished."""
        while self.finished < share * self.total:
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Counters:
    """The services' counters over the whole run (restarts included)."""

    possible_duplicates: CounterAcrossRestarts = field(default_factory=CounterAcrossRestarts)
    reconciled: CounterAcrossRestarts = field(default_factory=CounterAcrossRestarts)


class Injector:
    """Hands on one compose project: kills, starts, restarts, reads counters."""

    def __init__(self, compose: Compose, *, note: Callable[[str], None]) -> None:
        self.compose = compose
        self.note = note
        self.counters = Counters()
        self.killed_mid_sweep = 0
        """Replicas SIGKILLed as they swept (0 when no sweep came in time)."""

    # --- docker ---------------------------------------------------------------

    def containers(self, service: str) -> list[Container]:
        """``service``'s containers (stopped ones too), by replica number."""
        out = self.compose("ps", "--all", "--format", "json", service)
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        found = [Container(id=r["ID"], name=r["Name"], service=r["Service"]) for r in rows]
        return sorted(found, key=lambda c: c.replica)

    async def kill(self, container: Container) -> None:
        """SIGKILL ``container`` and wait until it has stopped (a start before
        that would be a no-op on a container about to exit)."""
        await asyncio.to_thread(_docker, "kill", "--signal", "KILL", container.id)
        await asyncio.to_thread(_docker, "wait", container.id)

    async def start(self, container: Container) -> None:
        await asyncio.to_thread(_docker, "start", container.id)

    async def read_counters(self, container: Container) -> None:
        """Read the counters ``container`` serves (a failed read leaves the last one)."""
        if container.service == "notifier":
            value = await self._scrape(container, NOTIFIER_METRICS_PORT, POSSIBLE_DUPLICATES_SAMPLE)
            if value is not None:
                self.counters.possible_duplicates.read(container.id, value)
        elif container.service == "api":
            value = await self._scrape(
                container, API_METRICS_PORT, RECONCILED_SAMPLE, RECONCILED_LABELS
            )
            if value is not None:
                self.counters.reconciled.read(container.id, value)

    def forget_counters(self, container: Container) -> None:
        """``container`` was killed: its counters restart from zero."""
        self.counters.possible_duplicates.killed(container.id)
        self.counters.reconciled.killed(container.id)

    async def _scrape(
        self,
        container: Container,
        port: int,
        sample: str,
        labels: dict[str, str] | None = None,
    ) -> float | None:
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            text = await asyncio.to_thread(
                _docker, "exec", container.id, "python", "-c", SCRAPE.format(url)
            )
        except AssertionError:
            return None
        return sample_sum(text, sample, labels)

    # --- faults ---------------------------------------------------------------

    async def redis_outage(self, plan: FaultPlan, progress: Progress) -> None:
        await progress.reached(plan.redis_stop_at)
        await asyncio.to_thread(self.compose, "stop", "redis")
        self.note("Redis stopped")
        await asyncio.sleep(plan.redis_down_seconds)
        await asyncio.to_thread(self.compose, "start", "redis")
        self.note(f"Redis started again after {plan.redis_down_seconds:.1f} s")

    async def api_kill(self, plan: FaultPlan, progress: Progress) -> None:
        await progress.reached(plan.api_kill_at)
        for api in self.containers("api"):
            await self.read_counters(api)
            await self.kill(api)
            self.forget_counters(api)
            self.note(f"{api.name} SIGKILLed")
            await self.start(api)
            self.note(f"{api.name} started again")

    async def postgres_restart(self, plan: FaultPlan, progress: Progress) -> None:
        await progress.reached(plan.postgres_restart_at)
        started = time.monotonic()
        self.note("PostgreSQL restarting")
        # SIGINT (PostgreSQL's fast shutdown), SIGKILL after 3 s (a lab image whose
        # PID 1 does not pass SIGINT on is killed: a crash restart).
        await asyncio.to_thread(self.compose, "restart", "--timeout", "3", "postgres")
        self.note(f"PostgreSQL restarted in {time.monotonic() - started:.1f} s")

    async def notifier_faults(self, plan: FaultPlan, progress: Progress) -> None:
        """Both notifier faults, in the order of their points (they never overlap)."""
        faults = sorted(
            [
                (plan.notifier_kill_at, self._kill_every_notifier),
                (plan.sweeper_kill_at, self._kill_sweeper),
            ],
            key=lambda fault: fault[0],
        )
        for at, inject in faults:
            await progress.reached(at)
            await inject(plan)

    async def _kill_every_notifier(self, plan: FaultPlan) -> None:
        del plan
        replicas = self.containers("notifier")
        await asyncio.gather(*(self.read_counters(replica) for replica in replicas))
        await asyncio.gather(*(self.kill(replica) for replica in replicas))
        for replica in replicas:
            self.forget_counters(replica)
        self.note(f"{len(replicas)} notifier replicas SIGKILLed")
        await asyncio.gather(*(self.start(replica) for replica in replicas))
        self.note("notifier replicas started again")

    async def _kill_sweeper(self, plan: FaultPlan) -> None:
        """Kill a replica, then its sibling as it sweeps; a replica killed while it
        held no job leaves nothing to sweep, so up to ``SWEEP_TRIES`` tries, each
        starting with the other replica."""
        first = plan.first_replica
        for _ in range(SWEEP_TRIES):
            if await self._kill_one_then_its_sweeper(first):
                return
            first = 3 - first

    async def _kill_one_then_its_sweeper(self, first_replica: int) -> bool:
        """Whether the sibling of ``first_replica`` was SIGKILLed as it swept."""
        replicas = self.containers("notifier")
        first = next(r for r in replicas if r.replica == first_replica)
        sweepers = [r for r in replicas if r is not first]
        await asyncio.gather(*(self.read_counters(replica) for replica in replicas))
        watch = [
            await asyncio.create_subprocess_exec(
                "docker",
                "logs",
                "--follow",
                "--since",
                f"{time.time():.3f}",
                sweeper.id,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for sweeper in sweepers
        ]
        try:
            await self.kill(first)
            killed_at = time.monotonic()
            self.forget_counters(first)
            self.note(f"{first.name} SIGKILLed; waiting for a sibling to sweep its jobs")
            sweeper = await self._first_to_sweep(sweepers, watch)
            if sweeper is None:
                self.note(f"no sweep logged within {SWEEP_WAIT_SECONDS:.0f} s")
            else:
                await self.kill(sweeper)
                self.killed_mid_sweep += 1
                self.forget_counters(sweeper)
                self.note(
                    f"{sweeper.name} SIGKILLed as it swept "
                    f"({time.monotonic() - killed_at:.1f} s after the first kill)"
                )
        finally:
            for follower in watch:
                if follower.returncode is None:
                    follower.kill()
                await follower.wait()
        await asyncio.gather(*(self.start(replica) for replica in replicas))
        self.note("notifier replicas started again")
        return sweeper is not None

    async def _first_to_sweep(
        self, sweepers: list[Container], watch: list[asyncio.subprocess.Process]
    ) -> Container | None:
        """The first of ``sweepers`` to log ``SWEEP_LINE`` (its log followed by
        ``watch``), or ``None`` if none does within ``SWEEP_WAIT_SECONDS``."""

        async def sweeps(follower: asyncio.subprocess.Process) -> None:
            assert follower.stdout is not None
            async for line in follower.stdout:
                if SWEEP_LINE.encode() in line:
                    return
            await asyncio.Future()  # log ended: never this one

        waits = {asyncio.ensure_future(sweeps(f)): s for f, s in zip(watch, sweepers, strict=True)}
        done, pending = await asyncio.wait(
            waits, timeout=SWEEP_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        return waits[next(iter(done))] if done else None


def _docker(*args: str) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout

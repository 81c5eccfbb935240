"""``make chaos``: 1,000 signups through the container stack while it is hurt.

Brings up ``compose.yaml`` plus the fault overlay under a project of its own,
signs 1,000 fresh addresses up while:

- Redis is stopped for a while (fault 1),
- the notifier is SIGKILLed twice (fault 3),
- the SMTP relay refuses 20% of messages with 4xx throughout (fault 4),

then waits for the mail to settle and prints one summary: users created,
welcome emails received, lost, duplicated, dead-lettered, and the time from
the last signup to the last email. Exits 0 only when lost = 0 and
duplicated = 0. The project is removed with its volumes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.ports import free_port
from herald_testing.signups import sign_up


@dataclass
class Run:
    total: int
    addresses: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    last_signup_at: float = 0.0
    events: list[str] = field(default_factory=list)
    progressed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> int:
        return len(self.addresses) + self.failures.total()

    def note(self, what: str) -> None:
        line = f"[chaos] {len(self.addresses):>5} signups: {what}"
        self.events.append(line)
        print(line, flush=True)


async def signups(api: httpx.AsyncClient, run: Run, *, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            try:
                run.addresses.append(await sign_up(api, display_name="Chaos"))
            except (AssertionError, httpx.HTTPError) as exc:
                run.failures[type(exc).__name__] += 1
            run.last_signup_at = time.monotonic()
            run.progressed.set()

    await asyncio.gather(*(one() for _ in range(run.total)))


async def when(run: Run, done: int) -> None:
    """Return once ``done`` signups have finished."""
    while run.finished < done:
        run.progressed.clear()
        await run.progressed.wait()


async def faults(compose: Compose, run: Run) -> None:
    """The fault schedule, by signup progress."""
    n = run.total
    await when(run, n * 15 // 100)
    await asyncio.to_thread(compose, "stop", "redis")
    run.note("Redis stopped")
    await when(run, n * 35 // 100)
    await asyncio.to_thread(compose, "up", "--detach", "--wait", "redis")
    run.note("Redis back")
    for at in (50, 75):
        await when(run, n * at // 100)
        await asyncio.to_thread(compose, "kill", "--signal", "SIGKILL", "notifier")
        run.note("notifier SIGKILLed")
        await asyncio.to_thread(compose, "up", "--detach", "--wait", "notifier")
        run.note("notifier restarted")


async def settle(
    inbox: MailDevClient, addresses: list[str], *, within: float
) -> tuple[Counter[str], float | None]:
    """Wait until every address has mail or ``within`` passes; counts and when the last came."""
    try:
        await inbox.wait_for_all(addresses, within=within)
    except AssertionError:
        return await inbox.count_by_recipient(addresses), None
    last = time.monotonic()
    # Give late duplicates (a redelivery after a crash) a moment to show up.
    await asyncio.sleep(3)
    return await inbox.count_by_recipient(addresses), last


async def chaos(compose: Compose, *, api_url: str, maildev_url: str, total: int) -> int:
    run = Run(total=total)
    inbox = MailDevClient(maildev_url)
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as api:
        started = time.monotonic()
        await asyncio.gather(signups(api, run, concurrency=16), faults(compose, run))
        run.note(f"signups done in {time.monotonic() - started:.1f} s")
    counts, last_email_at = await settle(inbox, run.addresses, within=600)
    await inbox.aclose()

    users = int(compose.sql("SELECT count(*) FROM users"))
    received = sum(counts.values())
    lost = len(set(run.addresses) - set(counts))
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    dead = compose.dead_letters()
    drain = f"{last_email_at - run.last_signup_at:.1f} s" if last_email_at else "never (lost)"
    print(
        "\n=== make chaos summary ===\n"
        f"signups attempted        {total}\n"
        f"signups answered 202     {len(run.addresses)}"
        f"{'  (failed: ' + dict(run.failures).__repr__() + ')' if run.failures else ''}\n"
        f"users created            {users}\n"
        f"welcome emails received  {received}\n"
        f"lost                     {lost}\n"
        f"duplicated               {duplicated}\n"
        f"dead-lettered            {len(dead)}\n"
        f"last signup -> last email {drain}\n"
        "faults: Redis stopped 15%->35% of signups; notifier SIGKILLed at 50% and 75%; "
        "SMTP relay refusing 20% with 451 throughout",
        flush=True,
    )
    return 0 if lost == 0 and duplicated == 0 and not run.failures else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="herald-chaos", description=__doc__)
    parser.add_argument("--signups", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    project = f"herald-chaos-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ) | {
        "HERALD_API_PUBLISHED_PORT": str(free_port()),
        "HERALD_MAILDEV_WEB_PORT": str(free_port()),
        "HERALD_MONITOR_PUBLISHED_PORT": str(free_port()),
        "HERALD_FAULT_SMTP_REFUSE_RATIO": "0.2",
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "5",
    }
    compose = Compose(project, env=env)
    status = 1
    try:
        compose("up", "--build", "--wait", "--wait-timeout", "300", timeout=900)
        status = asyncio.run(
            chaos(
                compose,
                api_url=f"http://127.0.0.1:{env['HERALD_API_PUBLISHED_PORT']}",
                maildev_url=f"http://127.0.0.1:{env['HERALD_MAILDEV_WEB_PORT']}",
                total=args.signups,
            )
        )
    finally:
        if not args.keep:
            compose("down", "--volumes", "--remove-orphans", "--timeout", "30")
    sys.exit(status)


if __name__ == "__main__":
    main()

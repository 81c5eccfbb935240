"""``make chaos``: 1,000 signups through the container stack while it is hurt.

    python -m herald_testing.chaos [--runs N] [--seed S] [--signups 1000] [--keep]

Each run brings up ``compose.yaml`` plus the fault overlay under a compose
project of its own, with 2 notifier replicas, and signs fresh addresses up
(16 at a time, each retried as a real client would: ``herald_testing.chaos_client``)
while the faults of its plan (``herald_testing.chaos_plan``, drawn from
``seed + run index``) hit it: Redis stopped for a while, the API SIGKILLed,
PostgreSQL restarted, both notifier replicas SIGKILLed, one replica SIGKILLed
and its sibling SIGKILLed as it sweeps, and the SMTP relay refusing 20% with
451 throughout (``herald_testing.chaos_faults`` says how each is done).

Then it waits until every accepted address has its welcome email and the
queue and the outbox are empty, counts (``herald_testing.chaos_tally``), saves
the containers' logs to ``.e2e/<project>/compose.log`` and removes the project
with its volumes. It prints per run and in total ``lost``, ``duplicated``,
``possible duplicates counted`` and ``reconciled`` lines, and exits non-zero
on any loss, any signup given up, or more duplicates seen than counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import httpx

from herald_testing.chaos_client import SignupResult, sign_up_until_accepted
from herald_testing.chaos_faults import Injector, Progress
from herald_testing.chaos_plan import SMTP_DELAY_SECONDS, SMTP_REFUSE_RATIO, FaultPlan, draw
from herald_testing.chaos_tally import (
    POSSIBLE_DUPLICATE_EVENTS,
    REPUSHED_EVENTS,
    Figures,
    Mail,
    events_by_message,
    read_mail,
    total,
)
from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.ports import free_port
from herald_testing.signups import fresh_address
from herald_testing.stack import ROOT

NOTIFIER_REPLICAS = 2
CONCURRENCY = 16
SIGNUP_PATIENCE_SECONDS = 180.0
"""How long one signup is retried before it counts as failed."""
SETTLE_SECONDS = 900.0
"""How long the run waits for every welcome email: SMTP retries back off, and a
message lost from Redis waits for the outbox reconciliation."""
QUIET_SECONDS = 300.0
"""How long, once every welcome arrived, it waits for an empty queue, no row left
to push and every outbox row settled by the reconciliation (a late resend would
come from a job still queued or a message pushed again)."""
LATE_MAIL_SECONDS = 3.0
RECONCILE_ENV = {
    # The scheduler's outbox reconciliation, as quick as its settings allow: every
    # 10 s, for rows unchecked for 60 s (the minimum), so a message Redis lost is
    # pushed again about a minute after its push.
    "HERALD_OUTBOX_RECONCILE_CRON": "* * * * * */10",
    "HERALD_OUTBOX_RECONCILE_AFTER_SECONDS": "60",
}


def stack_env() -> dict[str, str]:
    """The compose variables of one run: free host ports, the faults' settings."""
    return (
        dict(os.environ)
        | {
            "HERALD_API_PUBLISHED_PORT": str(free_port()),
            "HERALD_MAILDEV_WEB_PORT": str(free_port()),
            "HERALD_MONITOR_PUBLISHED_PORT": str(free_port()),
            "HERALD_FAULT_SMTP_REFUSE_RATIO": str(SMTP_REFUSE_RATIO),
            "HERALD_FAULT_SMTP_DELAY_SECONDS": str(SMTP_DELAY_SECONDS),
            "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "5",
            # A retried signup is the same address again: room for its retries.
            "HERALD_RATE_LIMIT_SIGNUP_PER_EMAIL": "1000/minute",
        }
        | RECONCILE_ENV
    )


class Run:
    """One run: its stack, its plan, what it saw."""

    def __init__(self, *, index: int, runs: int, plan: FaultPlan, signups: int) -> None:
        self.index = index
        self.runs = runs
        self.plan = plan
        self.progress = Progress(total=signups)
        self.results: list[SignupResult] = []
        self.last_accepted_at: float | None = None
        self.project = f"herald-chaos-{plan.seed}-{index}"
        self.env = stack_env()
        self.compose = Compose(self.project, env=self.env)
        self.injector = Injector(self.compose, note=self.note)

    def note(self, what: str) -> None:
        done, of = self.progress.finished, self.progress.total
        print(f"[chaos {self.index}/{self.runs}] {done:>5}/{of} signups: {what}", flush=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HERALD_API_PUBLISHED_PORT']}"

    @property
    def maildev_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HERALD_MAILDEV_WEB_PORT']}"

    @property
    def accepted(self) -> list[str]:
        return [result.address for result in self.results if result.accepted]

    async def sign_up_all(self, api: httpx.AsyncClient) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                result = await sign_up_until_accepted(
                    api,
                    address=fresh_address(),
                    display_name="Chaos",
                    within=SIGNUP_PATIENCE_SECONDS,
                )
            self.results.append(result)
            if result.accepted:
                self.last_accepted_at = time.time()
            self.progress.advance()

        await asyncio.gather(*(one() for _ in range(self.progress.total)))

    async def hurt(self) -> None:
        """Sign everyone up while the plan's faults hit the stack."""
        injector, plan, progress = self.injector, self.plan, self.progress
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30) as api:
            await asyncio.gather(
                self.sign_up_all(api),
                injector.redis_outage(plan, progress),
                injector.api_kill(plan, progress),
                injector.postgres_restart(plan, progress),
                injector.notifier_faults(plan, progress),
            )
        self.note(f"signups and faults done in {time.monotonic() - started:.1f} s")
        causes = Counter(cause for result in self.results for cause in result.retried_on)
        given_up = Counter(result.failure for result in self.results if not result.accepted)
        self.note(
            f"retried after: {dict(causes) or 'nothing'}; given up: {dict(given_up) or 'none'}"
        )

    async def settle(self, inbox: MailDevClient) -> Mail:
        """Wait for every accepted address's welcome, then for a quiet stack."""
        accepted = self.accepted
        deadline = time.monotonic() + SETTLE_SECONDS
        next_note = time.monotonic() + 30
        while True:
            mail = read_mail(await inbox.emails(), accepted)
            waiting = sum(1 for address in accepted if mail.welcomes[address.lower()] == 0)
            if waiting == 0 or time.monotonic() > deadline:
                break
            if time.monotonic() > next_note:
                self.note(f"{waiting} accepted addresses still without a welcome email")
                next_note += 30
            await asyncio.sleep(1)
        self.note(f"welcome emails settled ({waiting} missing)")
        await self.quiet()
        await asyncio.sleep(LATE_MAIL_SECONDS)
        return read_mail(await inbox.emails(), accepted)

    async def quiet(self) -> None:
        """Wait until the notifier queue is empty and every outbox row is pushed and
        settled (twice in a row)."""
        deadline = time.monotonic() + QUIET_SECONDS
        calm = 0
        while True:
            backlog = await asyncio.to_thread(self.backlog)
            calm = calm + 1 if not any(backlog.values()) else 0
            if calm == 2:
                return
            if time.monotonic() > deadline:
                self.note(f"not quiet within {QUIET_SECONDS:.0f} s: {backlog}")
                return
            await asyncio.sleep(1)

    def backlog(self) -> dict[str, int]:
        """What is still under way: notifier jobs queued, active or waiting to be
        retried; outbox rows not pushed yet, or not settled yet (where the outbox
        has a ledger)."""
        keys = "saq:notifier:queued saq:notifier:active saq:notifier:incomplete"
        script = (
            "return {redis.call('llen', KEYS[1]), redis.call('llen', KEYS[2]), "
            "redis.call('zcard', KEYS[3])}"
        )
        try:
            out = self.compose(
                "exec", "-T", "redis", "redis-cli", "eval", script, "3", *keys.split()
            )
            ledger = self.compose.sql(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = 'outbox' AND column_name = 'settled_at'"
            )
            unsettled = "settled_at IS NULL" if ledger == "1" else "false"
            rows = self.compose.sql(
                "SELECT count(*) FILTER (WHERE relayed_at IS NULL), "
                f"count(*) FILTER (WHERE {unsettled}) FROM outbox"
            )
        except AssertionError as exc:
            return {"unreadable": 1, f"{exc}"[:200]: 1}
        queued, active, waiting = (int(n) for n in out.split())
        unpushed, unsettled_rows = (int(n) for n in rows.split("|"))
        return {
            "jobs queued": queued,
            "jobs active": active,
            "jobs waiting": waiting,
            "outbox rows not pushed": unpushed,
            "outbox rows not settled": unsettled_rows,
        }

    async def figures(self, mail: Mail) -> Figures:
        """Count everything, from the inbox, the database, the logs and the counters."""
        for service in ("api", "notifier"):
            for container in self.injector.containers(service):
                await self.injector.read_counters(container)
        notifier_log = self.compose.json_logs("notifier")
        api_log = self.compose.json_logs("api")
        accepted = self.accepted
        counters = self.injector.counters
        drain = None
        if mail.last_at is not None and self.last_accepted_at is not None:
            drain = max(0.0, mail.last_at.timestamp() - self.last_accepted_at)
        lost = [a for a in accepted if mail.welcomes[a.lower()] == 0]
        if lost:
            self.explain_lost(lost)
        counted = events_by_message(notifier_log, POSSIBLE_DUPLICATE_EVENTS)
        unaccounted = mail.unaccounted(counted)
        for message_id, extra in list(unaccounted.items())[:10]:
            self.note(f"UNCOUNTED DUPLICATE: message {message_id}, {extra} extra copies")
        return Figures(
            signups=len(self.results),
            accepted=len(accepted),
            failed_signups=sum(1 for r in self.results if not r.accepted),
            retried_signups=sum(1 for r in self.results if r.attempts > 1),
            server_errors=sum(r.retried_on.count("HTTP 500") for r in self.results),
            users_created=int(self.compose.sql("SELECT count(*) FROM users")),
            welcome_emails=sum(mail.welcomes.values()),
            account_exists_notices=mail.account_exists,
            lost=len(lost),
            duplicated=sum(n - 1 for n in mail.welcomes.values() if n > 1),
            resent_any_email=mail.resent,
            unaccounted_duplicates=unaccounted.total(),
            possible_duplicates_counted=counted.total(),
            possible_duplicates_metric=int(counters.possible_duplicates.total),
            reconciled=events_by_message(api_log, REPUSHED_EVENTS).total(),
            reconciled_metric=int(counters.reconciled.total),
            dead_lettered=len(self.compose.dead_letters()),
            killed_mid_sweep=self.injector.killed_mid_sweep,
            drain_seconds=drain if not lost else None,
        )

    def explain_lost(self, lost: Sequence[str]) -> None:
        """Print what the outbox and Redis say of (up to 10) lost addresses' messages."""
        for address in lost[:10]:
            rows = self.compose.sql(
                "SELECT message_id, task, relayed_at IS NOT NULL, attempts FROM outbox "
                f"WHERE payload->>'email' = '{address}'"
            )
            for row in rows.splitlines():
                message_id = row.split("|", 1)[0]
                job = self.compose(
                    "exec", "-T", "redis", "redis-cli", "get", f"saq:job:notifier:{message_id}"
                ).strip()
                self.note(f"LOST {address}: outbox {row}; job {job[:400] or '(none)'}")
            if not rows:
                self.note(f"LOST {address}: no outbox row")

    def save_logs(self) -> None:
        log_dir = ROOT / ".e2e" / self.project
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "compose.log"
        path.write_text(self.compose("logs", "--no-color", "--timestamps"), encoding="utf-8")
        self.note(f"container logs: {path}")

    async def go(self, *, build: bool) -> Figures:
        self.note(f"project {self.project}, seed {self.plan.seed}\n{self.plan.describe()}")
        up = ["up", "--wait", "--wait-timeout", "300", f"--scale=notifier={NOTIFIER_REPLICAS}"]
        await asyncio.to_thread(self.compose, *up, *(["--build"] if build else []), timeout=900)
        await self.hurt()
        inbox = MailDevClient(self.maildev_url)
        try:
            mail = await self.settle(inbox)
        finally:
            await inbox.aclose()
        return await self.figures(mail)


def report(title: str, figures: Figures) -> None:
    problems = figures.problems()
    verdict = "FAILED: " + "; ".join(problems) if problems else "passed"
    print(f"\n=== {title}: {verdict} ===", flush=True)
    print("\n".join(figures.lines()), flush=True)


def chaos(*, runs: int, seed: int, signups: int, keep: bool) -> int:
    print(f"[chaos] {runs} run(s), seed {seed} (repeat: make chaos SEED={seed})", flush=True)
    results: list[Figures] = []
    broken = 0
    for index in range(1, runs + 1):
        run = Run(index=index, runs=runs, plan=draw(seed + index - 1), signups=signups)
        try:
            figures = asyncio.run(run.go(build=index == 1))
        except (AssertionError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
            broken += 1
            run.note(f"run broke off: {exc}")
            continue
        finally:
            try:
                run.save_logs()
            except AssertionError as exc:
                run.note(f"logs not saved: {exc}")
            if not keep:
                run.compose("down", "--volumes", "--remove-orphans", "--timeout", "30")
        results.append(figures)
        report(f"run {index}/{runs}, seed {run.plan.seed}", figures)
    if results:
        report(f"total of {len(results)} run(s), seed {seed}", total(results))
    if broken:
        print(f"{broken} run(s) broke off before counting", flush=True)
    failed = broken or any(figures.problems() for figures in results)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="herald-chaos", description=__doc__)
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh stack")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the fault plans (default: random)"
    )
    parser.add_argument("--signups", type=int, default=1000, help="signups per run")
    parser.add_argument("--keep", action="store_true", help="leave the stacks running")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    started = datetime.now().astimezone()
    status = chaos(runs=args.runs, seed=seed, signups=args.signups, keep=args.keep)
    print(f"[chaos] started {started:%H:%M:%S}, took {datetime.now().astimezone() - started}")
    sys.exit(status)


if __name__ == "__main__":
    main()

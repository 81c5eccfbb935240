"""Every point of a message's life in the notifier where a process can die.

Each test runs a real notifier (``python -m herald_notifier``) with
``HERALD_NOTIFIER_CRASH_AT=<point>``, sees it die exactly there (exit status 70
and its ``fault.crash`` log line), then runs a second notifier without the
fault and checks what the point promises, counted at a real SMTP server:
delivered once; or delivered, and counted as a possible duplicate; or
dead-lettered. Never lost. Dying inside DATA (the relay holding its reply) is
``test_exactly_once.test_a_sigkilled_worker_mid_data_is_recovered_by_another_within_the_bound``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from saq import Job, Queue, Status
from saq.utils import now

from herald_notifier.dead_letters import DeadLetters
from herald_notifier.faults import CRASH_STATUS, CrashPoint
from herald_notifier.settings import Settings
from herald_notifier.worker import build_settings
from herald_shared.tasks import SEND_WELCOME_EMAIL
from herald_testing.jobs import FINISHED_JOB_SECONDS, finished, running_worker, wait_for_job
from herald_testing.messages import LINK_SECRET, welcome_email
from herald_testing.processes import running_notifier
from herald_testing.smtp import ScriptedRelay, serve_smtp

SettingsFor = Callable[..., Settings]

SWEEP_SECONDS = 1
HEARTBEAT = 1
"""Short, so that a crashed attempt's job is stuck (and its claim lapsed) within a second."""


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def possible_duplicates(cause: str) -> float:
    return value("herald_notifier_possible_duplicates_total", cause=cause)


def quick_job(email: str, **fields: Any) -> Job:
    """A welcome email's job, stuck 1 s after its last heartbeat, retried at once."""
    job = SEND_WELCOME_EMAIL.job(welcome_email(email=email))
    job.heartbeat = HEARTBEAT
    job.retry_delay = 0.05
    for name, setting in fields.items():
        setattr(job, name, setting)
    return job


async def crashed_at(
    point: CrashPoint,
    *,
    redis_url: str,
    queue_namespace: str,
    smtp_port: int,
    tmp_path: Path,
) -> dict[str, Any]:
    """Run a notifier with the fault switch at ``point`` until it dies there;
    its ``fault.crash`` log line."""
    env = {
        "HERALD_REDIS_URL": redis_url,
        "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
        "HERALD_QUEUE_NAMESPACE": queue_namespace,
        "HERALD_SMTP_PORT": str(smtp_port),
        "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "0",
        "HERALD_NOTIFIER_FINISHED_JOB_SECONDS": str(FINISHED_JOB_SECONDS),
        "HERALD_NOTIFIER_SWEEP_SECONDS": str(SWEEP_SECONDS),
        "HERALD_NOTIFIER_CRASH_AT": point,
    }
    async with running_notifier(env, log_path=tmp_path / f"{point}.log") as notifier:
        status = await notifier.exit_status(within=30)
        lines = notifier.lines()
    assert status == CRASH_STATUS, notifier.log_path.read_text()[-2000:]
    crashes: list[dict[str, Any]] = [line for line in lines if line["event"] == "fault.crash"]
    [crash] = crashes
    assert crash["point"] == point
    return crash


async def recovered(
    settings_for: SettingsFor, queue: Queue, port: int, keys: list[str], *, within: float = 15
) -> list[Job]:
    """Run a second notifier (no fault) until the jobs ``keys`` are over; the jobs."""
    settings = settings_for(smtp_port=port, notifier_sweep_seconds=SWEEP_SECONDS)
    async with running_worker(build_settings(settings)):
        return [await wait_for_job(queue, key, finished, within=within) for key in keys]


@dataclass(frozen=True)
class Crashes:
    """A crash test's two notifiers, on the test's Redis namespace and log folder:
    one that dies at a point, then one without the fault."""

    redis_url: str
    queue_namespace: str
    settings_for: SettingsFor
    queue: Queue
    tmp_path: Path

    async def crashed_at(self, point: CrashPoint, *, smtp_port: int) -> dict[str, Any]:
        return await crashed_at(
            point,
            redis_url=self.redis_url,
            queue_namespace=self.queue_namespace,
            smtp_port=smtp_port,
            tmp_path=self.tmp_path,
        )

    async def recovered(self, port: int, keys: list[str], *, within: float = 15) -> list[Job]:
        return await recovered(self.settings_for, self.queue, port, keys, within=within)


@pytest.fixture
def crashes(
    redis_url: str,
    queue_namespace: str,
    settings_for: SettingsFor,
    notifier_queue: Queue,
    tmp_path: Path,
) -> Crashes:
    return Crashes(redis_url, queue_namespace, settings_for, notifier_queue, tmp_path)


async def abandoned(queue: Queue, job: Job) -> Job:
    """``job`` as a worker that died mid-attempt left it: in the active list,
    marked active, untouched for 5 s."""
    await queue.enqueue(job)
    running = await queue.dequeue()
    assert running is not None
    running.status, running.attempts, running.worker_id = Status.ACTIVE, 1, "dead-worker"
    running.started = running.touched = now() - 5000
    await queue.redis.set(running.id, queue.serialize(running))  # type: ignore[attr-defined]
    return running


async def in_no_list(queue: Queue, job: Job) -> bool:
    redis = queue.redis  # type: ignore[attr-defined]
    active = await redis.lrange(f"saq:{queue.name}:active", 0, -1)
    queued = await redis.lrange(f"saq:{queue.name}:queued", 0, -1)
    incomplete = await redis.zscore(f"saq:{queue.name}:incomplete", job.id)
    return job.id.encode() not in active + queued and incomplete is None


# --- an attempt -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "cause"),
    [
        # Moved to the active list, not yet marked active: swept two sweeps later.
        ("after_dequeue", None),
        # Claimed, nothing sent: the expired claim cannot tell, so it is counted.
        ("after_claim", "crash"),
    ],
)
async def test_a_crash_before_anything_is_sent_delivers_once(
    point: CrashPoint,
    cause: str | None,
    notifier_queue: Queue,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay()
    job = quick_job("ada@example.com")
    counted = {c: possible_duplicates(c) for c in ("crash", "unconfirmed")}

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at(point, smtp_port=port)
        [done] = await crashes.recovered(port, [job.key])

    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert len(relay.received) == 1
    assert {c: possible_duplicates(c) - counted[c] for c in counted} == {
        "crash": 1.0 if cause == "crash" else 0.0,
        "unconfirmed": 0.0,
    }


async def test_a_crash_after_the_relay_accepted_before_the_sent_mark_resends_counted(
    notifier_queue: Queue,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay()
    job = quick_job("grace@example.com")
    counted_crashes = possible_duplicates("crash")

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at("after_smtp_accept", smtp_port=port)
        assert len(relay.received) == 1
        [done] = await crashes.recovered(port, [job.key])

    # RFC 1047's window: sent twice, and counted, with one Message-ID to collapse.
    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert len(relay.received) == 2
    assert len({str(message["Message-ID"]) for message in relay.received}) == 1
    assert possible_duplicates("crash") == counted_crashes + 1


async def test_a_crash_after_the_sent_mark_completes_without_sending_again(
    notifier_queue: Queue,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay()
    job = quick_job("linus@example.com")
    doubts = possible_duplicates("crash") + possible_duplicates("unconfirmed")
    suppressed = value("herald_notifier_duplicates_suppressed_total")

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at("after_mark", smtp_port=port)
        [done] = await crashes.recovered(port, [job.key])

    assert (done.status, done.result, done.attempts) == (
        Status.COMPLETE,
        "duplicate_suppressed",
        2,
    )
    assert len(relay.received) == 1
    assert possible_duplicates("crash") + possible_duplicates("unconfirmed") == doubts
    assert value("herald_notifier_duplicates_suppressed_total") == suppressed + 1


async def test_a_crash_before_the_retry_of_a_refused_attempt_delivers_once(
    notifier_queue: Queue,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay(["451 4.3.0 try again later"])
    job = quick_job("edsger@example.com")
    doubts = possible_duplicates("crash") + possible_duplicates("unconfirmed")

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at("before_retry", smtp_port=port)
        stored = await notifier_queue.job(job.key)
        [done] = await crashes.recovered(port, [job.key])

    assert stored is not None
    assert stored.status == Status.ACTIVE  # the retry never written: still the dead attempt's
    assert (done.status, done.result) == (Status.COMPLETE, "sent")
    assert len(relay.received) == 1
    # The 451 released the claim before the crash: nothing to doubt.
    assert possible_duplicates("crash") + possible_duplicates("unconfirmed") == doubts


# --- failing for good -----------------------------------------------------------------


async def test_a_crash_before_the_dead_letter_leaves_the_failure_to_the_next_attempt(
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay(["550 5.1.1 no such user"] * 2)
    job = quick_job("nobody@example.com")

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at("before_dead_letter", smtp_port=port)
        letters_after_crash = await dead_letters.entries()
        [done] = await crashes.recovered(port, [job.key])

    assert letters_after_crash == []
    [letter] = await dead_letters.entries()
    assert (done.status, done.attempts) == (Status.FAILED, 2)
    assert (letter.kind, letter.attempts) == ("rejected", 2)
    assert relay.received == []


async def test_a_crash_after_the_dead_letter_leaves_the_job_failed_with_its_letter(
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay(["550 5.1.1 no such user"])
    job = quick_job("nobody@example.com")

    with serve_smtp(relay) as port:
        await notifier_queue.enqueue(job)
        await crashes.crashed_at("after_dead_letter", smtp_port=port)

    done = await notifier_queue.job(job.key)
    [letter] = await dead_letters.entries()
    assert done is not None
    assert (done.status, done.attempts) == (Status.FAILED, 1)
    assert await in_no_list(notifier_queue, done)
    assert (letter.kind, letter.job_key) == ("rejected", job.key)


# --- the sweeper ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "outcome"),
    [(25, Status.COMPLETE), (1, Status.ABORTED)],  # with an attempt left, and without
)
async def test_a_sweeper_crashing_before_its_requeue_leaves_the_job_to_the_next_sweep(
    retries: int,
    outcome: Status,
    notifier_queue: Queue,
    dead_letters: DeadLetters,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay()
    job = await abandoned(notifier_queue, quick_job("barbara@example.com", retries=retries))
    before = await notifier_queue.job(job.key)

    with serve_smtp(relay) as port:
        await crashes.crashed_at("sweep_before_requeue", smtp_port=port)
        after_crash = await notifier_queue.job(job.key)
        [done] = await crashes.recovered(port, [job.key])

    assert before is not None
    assert after_crash is not None
    assert after_crash.to_dict() == before.to_dict()  # untouched, still in the active list
    assert done.status == outcome
    if outcome == Status.COMPLETE:
        assert len(relay.received) == 1
    else:
        [letter] = await dead_letters.entries()
        assert letter.kind == "stuck"
        assert relay.received == []


async def test_a_sweeper_killed_in_the_middle_of_a_sweep_loses_none_of_the_stuck_jobs(
    notifier_queue: Queue,
    crashes: Crashes,
) -> None:
    relay = ScriptedRelay()
    jobs = [await abandoned(notifier_queue, quick_job(f"user{n}@example.com")) for n in range(5)]

    with serve_smtp(relay) as port:
        # Dies right after the first of the five re-queues it makes.
        await crashes.crashed_at("sweep_after_requeue", smtp_port=port)
        stored = [await notifier_queue.job(job.key) for job in jobs]
        done = await crashes.recovered(port, [job.key for job in jobs])

    statuses = [job.status for job in stored if job is not None]
    assert Status.QUEUED in statuses  # the crash came after a re-queue...
    assert set(statuses) <= {Status.QUEUED, Status.ACTIVE}  # ...and left none in no list
    assert [(job.status, job.result) for job in done] == [(Status.COMPLETE, "sent")] * 5
    assert sorted(str(message["To"]) for message in relay.received) == sorted(
        f"Ada <user{n}@example.com>" for n in range(5)
    )

"""Every point of a message's life in the API where a process can die, and a Redis
that forgets: the message is still delivered, once, and its outbox row settled.

Each crash test runs a real ``herald-api serve`` with ``HERALD_API_CRASH_AT=<point>``,
sees it die exactly there (exit status 70, its ``fault.crash`` line), then runs a
fresh API (its relay), a real notifier (``python -m herald_notifier``) and the
reconciliation, and counts the emails a real SMTP server (aiosmtpd) received:
exactly one, and the row settled ``delivered``. Never lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from saq import Queue
from saq.queue.redis import RedisQueue

from herald_api.core.faults import CRASH_STATUS, CrashPoint
from herald_shared.ledger import delivery_record_key, job_key, saq_key
from herald_testing.messages import LINK_SECRET
from herald_testing.processes import Running, ServedApi, running_notifier, serve_api
from herald_testing.smtp import ScriptedRelay, serve_smtp
from herald_testing.waiting import eventually

TOKEN = "internal-token-for-crash-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIGNUP = {"email": "crash@example.com", "password": "correct horse battery", "display_name": "C"}
RECONCILE = {"older_than_seconds": 300}

InsertPending = Callable[..., Awaitable[list[Any]]]


@dataclass
class Rig:
    """What a crash test runs: the API's environment, an SMTP server, a notifier's."""

    api_env: dict[str, str]
    notifier_env: dict[str, str]
    smtp: ScriptedRelay
    db: asyncpg.Connection
    queue: Queue
    tmp_path: Path

    def emails_to(self, address: str) -> int:
        return sum(
            1
            for message in self.smtp.received
            if [to.addr_spec for to in message["To"].addresses] == [address]
        )

    @contextlib.asynccontextmanager
    async def api(self, name: str, **env: str) -> AsyncIterator[ServedApi]:
        async with serve_api(self.api_env | env, log_path=self.tmp_path / f"{name}.log") as api:
            yield api

    @contextlib.asynccontextmanager
    async def notifier(self) -> AsyncIterator[Running]:
        async with running_notifier(
            self.notifier_env, log_path=self.tmp_path / "notifier.log"
        ) as notifier:
            yield notifier

    async def settled_as(self, message_id: object) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT settled_as FROM outbox WHERE message_id = $1", message_id
        )
        return value

    async def reconciled(self, api: ServedApi, message_id: object) -> str | None:
        """Run reconciliations (as if its interval had passed each time) until the row
        is settled; how it was settled."""

        async def settled() -> str | None:
            await self.db.execute(
                "UPDATE outbox SET checked_at = now() - interval '10 minutes' "
                "WHERE settled_at IS NULL"
            )
            async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
                response = await http.post(
                    "/internal/v1/outbox/reconcile", json=RECONCILE, headers=AUTH
                )
            assert response.status_code == 200, response.text
            return await self.settled_as(message_id)

        await eventually(settled, "the row settled", within=30.0, every=0.5)
        return await self.settled_as(message_id)


@pytest.fixture
async def rig(
    *,
    api_env: dict[str, str],
    redis_url: str,
    queue_namespace: str,
    db: asyncpg.Connection,
    notifier_queue: Queue,
    tmp_path: Path,
) -> AsyncIterator[Rig]:
    smtp = ScriptedRelay()
    with serve_smtp(smtp) as port:
        yield Rig(
            api_env=api_env
            | {"HERALD_INTERNAL_TOKEN": TOKEN, "HERALD_OUTBOX_FAST_PATH_GRACE_SECONDS": "0"},
            notifier_env={
                "HERALD_REDIS_URL": redis_url,
                "HERALD_QUEUE_NAMESPACE": queue_namespace,
                "HERALD_LINK_SECRET": LINK_SECRET.get_secret_value(),
                "HERALD_SMTP_PORT": str(port),
                "HERALD_NOTIFIER_SHUTDOWN_GRACE_SECONDS": "0",
            },
            smtp=smtp,
            db=db,
            queue=notifier_queue,
            tmp_path=tmp_path,
        )


def crash_line(api: ServedApi, point: CrashPoint) -> dict[str, Any]:
    [line] = [line for line in api.lines() if line["event"] == "fault.crash"]
    assert line["point"] == point
    return line


async def recover_and_settle(rig: Rig, message_id: object, address: str) -> None:
    """A fresh API and a notifier: the email arrives once and the row is settled."""
    async with rig.api("recovered") as api, rig.notifier():
        await eventually(lambda: rig.emails_to(address) >= 1, "the email delivered", within=30.0)
        assert await rig.reconciled(api, message_id) == "delivered"
        # Nothing of it left to run: no second email can follow.
        assert await rig.queue.count("incomplete") == 0
    assert rig.emails_to(address) == 1


@pytest.mark.parametrize("point", ["after_commit", "after_push", "before_relayed_mark"])
async def test_a_signup_whose_api_dies_at_point_is_still_delivered_once(
    rig: Rig, point: CrashPoint
) -> None:
    """after_commit: nothing pushed; after_push and before_relayed_mark: pushed, the
    row still pending, so the relay pushes it again (SAQ's key, or the notifier's
    delivery record, absorbs the second push)."""
    async with rig.api("crashed", HERALD_API_CRASH_AT=point) as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            with contextlib.suppress(httpx.TransportError):
                # before_relayed_mark dies after the response, on the marks' next tick.
                assert (await http.post("/api/v1/users", json=SIGNUP)).status_code == 202
        assert await api.exit_status() == CRASH_STATUS
        crash = crash_line(api, point)

    row = await rig.db.fetchrow("SELECT message_id, relayed_at FROM outbox")
    assert row is not None
    assert row["relayed_at"] is None
    if point != "before_relayed_mark":
        assert crash["message_id"] == str(row["message_id"])
    pushed = await rig.queue.job(str(row["message_id"]))
    assert (pushed is not None) == (point != "after_commit")

    await recover_and_settle(rig, row["message_id"], SIGNUP["email"])


async def test_a_relay_that_dies_after_its_push_leaves_the_row_to_the_next_relay(
    rig: Rig, insert_pending: InsertPending
) -> None:
    async with rig.api("crashed", HERALD_API_CRASH_AT="relay_after_push") as api:
        [message_id] = await insert_pending(1)
        assert await api.exit_status() == CRASH_STATUS
        assert crash_line(api, "relay_after_push")["message_id"] == str(message_id)

    # Pushed, but the batch's transaction died with the process: still pending.
    assert await rig.db.fetchval("SELECT relayed_at FROM outbox") is None
    assert await rig.queue.job(str(message_id)) is not None

    await recover_and_settle(rig, message_id, "user0@example.com")


async def test_a_reconciliation_that_dies_after_its_push_is_finished_by_the_next(
    rig: Rig, insert_pending: InsertPending
) -> None:
    """Redis lost the job; the reconciliation pushes it again and dies before it
    can count the push: the next reconciliation finds the job and waits for it."""
    [message_id] = await insert_pending(
        1, relayed_at="now() - interval '10 minutes'", checked_at="now() - interval '10 minutes'"
    )
    async with rig.api("crashed", HERALD_API_CRASH_AT="reconcile_after_push") as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            with pytest.raises(httpx.TransportError):
                await http.post("/internal/v1/outbox/reconcile", json=RECONCILE, headers=AUTH)
        assert await api.exit_status() == CRASH_STATUS
        assert crash_line(api, "reconcile_after_push")["message_id"] == str(message_id)

    assert await rig.db.fetchval("SELECT repushes FROM outbox") == 0
    assert await rig.queue.job(str(message_id)) is not None

    await recover_and_settle(rig, message_id, "user0@example.com")


# --- Redis forgets --------------------------------------------------------------------


async def forget_job(queue: Queue, message_id: object) -> None:
    """What a Redis host crash under ``appendfsync everysec`` does to a job accepted
    in its last second: the job, and its place in SAQ's lists, are gone."""
    assert isinstance(queue, RedisQueue)
    job_id = job_key(queue.name, message_id)
    async with queue.redis.pipeline(transaction=True) as pipe:
        pipe.delete(job_id)
        pipe.lrem(saq_key(queue.name, "queued"), 0, job_id)
        pipe.lrem(saq_key(queue.name, "active"), 0, job_id)
        pipe.zrem(saq_key(queue.name, "incomplete"), job_id)
        await pipe.execute()


async def test_a_message_redis_lost_after_its_relay_is_pushed_again_and_delivered(
    rig: Rig,
) -> None:
    async with rig.api("api") as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            assert (await http.post("/api/v1/users", json=SIGNUP)).status_code == 202
        await eventually(
            lambda: rig.db.fetchval("SELECT relayed_at IS NOT NULL FROM outbox"), "relayed"
        )
        message_id = await rig.db.fetchval("SELECT message_id FROM outbox")
        await forget_job(rig.queue, message_id)
        assert await rig.queue.job(str(message_id)) is None

        async with rig.notifier():
            assert await rig.reconciled(api, message_id) == "delivered"
    assert rig.emails_to(SIGNUP["email"]) == 1
    assert await rig.db.fetchval("SELECT repushes FROM outbox") == 1
    repushed = [line for line in api.lines() if line["event"] == "outbox.repushed"]
    assert [line["message_id"] for line in repushed] == [str(message_id)]


async def test_a_message_sent_while_redis_lost_its_job_is_not_sent_again(rig: Rig) -> None:
    """The job vanished while an attempt held the delivery claim; the reconciliation
    pushes it again, and that attempt then marks it sent. The pushed job must find
    the ``sent`` record and be acknowledged without a second email."""
    async with rig.api("api") as api:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            assert (await http.post("/api/v1/users", json=SIGNUP)).status_code == 202
        await eventually(
            lambda: rig.db.fetchval("SELECT relayed_at IS NOT NULL FROM outbox"), "relayed"
        )
        message_id = await rig.db.fetchval("SELECT message_id FROM outbox")
        assert isinstance(rig.queue, RedisQueue)
        record = delivery_record_key(rig.queue.name, message_id)
        await forget_job(rig.queue, message_id)
        await rig.queue.redis.set(record, "claimed:ghost/attempt/1:99999999999999")
        await rig.db.execute("UPDATE outbox SET checked_at = now() - interval '10 minutes'")
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            response = await http.post(
                "/internal/v1/outbox/reconcile", json=RECONCILE, headers=AUTH
            )
        assert response.json()["repushed"] == 1
        # The ghost attempt's email went out; it marks the record sent.
        await rig.queue.redis.set(record, "sent:")

        async with rig.notifier() as notifier:
            assert await rig.reconciled(api, message_id) == "delivered"
            await eventually(
                lambda: "email.duplicate_suppressed" in notifier.events(),
                "the pushed job acknowledged without a send",
            )
    assert rig.emails_to(SIGNUP["email"]) == 0
    assert "email.sent" not in notifier.events()

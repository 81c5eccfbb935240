"""The transactional outbox on signup: one transaction, then the fast path.

A signup writes its user and its welcome email's outbox row together, pushes
the email to SAQ right after the commit, and only then marks the row relayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NoReturn

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from saq import Queue
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from structlog.testing import capture_logs

from herald_api.accounts.links import LinkPolicy
from herald_api.accounts.schemas import UserCreate
from herald_api.accounts.service import AccountService
from herald_api.auth.passwords import PasswordHasher
from herald_api.auth.sessions import SessionPolicy, SessionService
from herald_api.auth.tokens import AccessTokens
from herald_api.core import faults
from herald_api.outbox import table as outbox
from herald_api.outbox.crashing import CrashingDispatcher
from herald_api.outbox.dispatch import Dispatcher, RelayedMarks
from herald_api.outbox.relay import Relay
from herald_shared import queues
from herald_shared.messages import WelcomeEmail
from herald_shared.tasks import SEND_ACCOUNT_EXISTS_EMAIL, SEND_WELCOME_EMAIL
from herald_testing.messages import welcome_email
from herald_testing.waiting import eventually

BODY = {"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}


async def test_signup_writes_one_user_and_one_outbox_row_marked_relayed_after_the_push(
    client: httpx.AsyncClient, db: asyncpg.Connection, notifier_queue: Queue
) -> None:
    response = await client.post("/api/v1/users", json=BODY)

    assert response.status_code == 202
    user_id = str(await db.fetchval("SELECT id FROM users"))
    # Marked in the next batch after the response (RelayedMarks, every 0.1 s).
    await eventually(
        lambda: db.fetchval("SELECT relayed_at IS NOT NULL FROM outbox"), "the row marked relayed"
    )
    [row] = await db.fetch("SELECT * FROM outbox")
    assert row["task"] == SEND_WELCOME_EMAIL.name
    assert row["queue"] == queues.NOTIFIER
    assert row["attempts"] == 0
    assert row["last_error"] is None
    assert row["relayed_at"] is not None
    assert row["relayed_at"] >= row["created_at"]
    message = WelcomeEmail.decode(json.loads(row["payload"]))
    assert message.message_id == row["message_id"]
    assert str(message.user_id) == user_id
    [job] = (await notifier_queue.info(jobs=True))["jobs"]
    assert job["key"] == str(row["message_id"])
    assert WelcomeEmail.decode(job["kwargs"]["payload"]) == message


async def test_a_taken_email_writes_no_user_and_stages_the_owner_s_notice(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    assert (await client.post("/api/v1/users", json=BODY)).status_code == 202
    assert (await client.post("/api/v1/users", json=BODY)).status_code == 202

    assert await db.fetchval("SELECT count(*) FROM users") == 1
    tasks = await db.fetch("SELECT task FROM outbox ORDER BY created_at")
    assert [row["task"] for row in tasks] == [
        SEND_WELCOME_EMAIL.name,
        SEND_ACCOUNT_EXISTS_EMAIL.name,
    ]


class SimulatedCrashError(BaseException):
    """Stands in for os._exit: nothing after it runs, like a process that died there."""


async def test_a_crash_right_after_commit_leaves_a_pending_row_that_the_relay_delivers(
    sessions: async_sessionmaker[AsyncSession],
    db: asyncpg.Connection,
    notifier_queue: Queue,
    make_relay: Callable[..., Relay],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(status: int) -> NoReturn:
        raise SimulatedCrashError(status)

    monkeypatch.setattr(os, "_exit", crash)
    hasher = PasswordHasher(memory_kib=19_456, time_cost=2, parallelism=1, workers=1, queue_depth=4)
    dispatcher = CrashingDispatcher(
        {queues.NOTIFIER: notifier_queue},
        marks=RelayedMarks(sessions),
        timeout_seconds=2.0,
        grace_seconds=0,
        faults=faults.Faults("after_commit"),
    )
    tokens = AccessTokens(secret=SecretStr("y" * 32), ttl_seconds=900)
    accounts = AccountService(
        sessions=sessions,
        dispatcher=dispatcher,
        hasher=hasher,
        tokens=tokens,
        login_sessions=SessionService(
            sessions=sessions,
            tokens=tokens,
            policy=SessionPolicy(
                idle=timedelta(days=30), max_age=timedelta(days=90), grace=timedelta(seconds=5)
            ),
            dispatcher=dispatcher,
        ),
        links=LinkPolicy(
            secret=SecretStr("x" * 32),
            address_link_valid_for=timedelta(hours=1),
            reset_link_valid_for=timedelta(hours=1),
        ),
    )
    try:
        with pytest.raises(SimulatedCrashError) as crashed:
            await accounts.sign_up(UserCreate.model_validate(BODY))
    finally:
        hasher.close()
    assert crashed.value.args == (faults.CRASH_STATUS,)

    # Committed together (one transaction id), nothing pushed, nothing marked.
    user = await db.fetchrow("SELECT id, xmin::text AS xid FROM users")
    row = await db.fetchrow("SELECT message_id, relayed_at, payload, xmin::text AS xid FROM outbox")
    assert user is not None
    assert row is not None
    assert user["xid"] == row["xid"]
    assert row["relayed_at"] is None
    assert await notifier_queue.count("queued") == 0

    result = await make_relay().relay_once()

    assert result.relayed.total() == 1
    assert await db.fetchval("SELECT relayed_at IS NOT NULL FROM outbox") is True
    [job] = (await notifier_queue.info(jobs=True))["jobs"]
    assert job["key"] == str(row["message_id"])
    assert WelcomeEmail.decode(job["kwargs"]["payload"]).user_id == user["id"]


async def test_the_relay_leaves_a_new_row_to_the_fast_path_during_the_grace_period(
    sessions: async_sessionmaker[AsyncSession],
    db: asyncpg.Connection,
    make_relay: Callable[..., Relay],
    notifier_queue: Queue,
) -> None:
    dispatcher = Dispatcher(
        {queues.NOTIFIER: notifier_queue},
        marks=RelayedMarks(sessions),
        timeout_seconds=2.0,
        grace_seconds=60,
    )
    message = welcome_email(user_id=uuid.uuid4(), email="a@example.com", display_name="A")
    async with sessions() as session:
        await dispatcher.stage(session, message)
        await session.commit()

    result = await make_relay().relay_once()

    assert result.claimed == 0
    assert await db.fetchval("SELECT available_at - created_at FROM outbox") == timedelta(
        seconds=60
    )


async def test_the_fast_path_never_waits_for_a_relay_holding_its_row(
    sessions: async_sessionmaker[AsyncSession],
    db: asyncpg.Connection,
    database_url: str,
    insert_pending: Callable[..., Awaitable[list[uuid.UUID]]],
) -> None:
    [message_id] = await insert_pending(1)
    relay = await asyncpg.connect(database_url)
    try:
        await relay.execute("BEGIN")
        await relay.execute("SELECT 1 FROM outbox WHERE message_id = $1 FOR UPDATE", message_id)
        async with sessions() as session, asyncio.timeout(2):
            marked = await outbox.mark_relayed(session, [message_id])
            await outbox.retry_soon(session, message_id, error="x")
            await session.commit()
    finally:
        await relay.close()

    # The relay holding it settles the row itself; the request left it alone.
    assert marked == 0
    row = await db.fetchrow("SELECT relayed_at, attempts FROM outbox")
    assert (row["relayed_at"], row["attempts"]) == (None, 0)


async def test_a_failed_outbox_update_after_commit_still_answers_202(
    client: httpx.AsyncClient, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mark runs after the response, so its failure can only cost a re-push.
    async def fails(session: AsyncSession, *_args: object, **_kwargs: object) -> int:
        await session.connection()  # the update's transaction has begun
        raise TimeoutError

    monkeypatch.setattr(outbox, "mark_relayed", fails)

    with capture_logs() as logs:
        response = await client.post("/api/v1/users", json=BODY)
        await eventually(
            lambda: any(line["event"] == "outbox.update_failed" for line in logs),
            "the failed mark logged",
        )

    assert response.status_code == 202, response.text
    assert response.json()["email"] == BODY["email"]
    assert await db.fetchval("SELECT count(*) FROM users") == 1
    # The row was not marked: the relay pushes it again, SAQ's key refuses the twin.
    assert await db.fetchval("SELECT relayed_at IS NULL FROM outbox") is True


async def test_marks_are_batched_and_retried_after_a_failure(
    sessions: async_sessionmaker[AsyncSession],
    db: asyncpg.Connection,
    insert_pending: Callable[..., Awaitable[list[uuid.UUID]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = await insert_pending(3)
    marks = RelayedMarks(sessions)
    real = outbox.mark_relayed

    async def fails(*_args: object, **_kwargs: object) -> int:
        raise TimeoutError

    monkeypatch.setattr(outbox, "mark_relayed", fails)
    for message_id in ids:
        marks.add(message_id)
    assert await marks.flush() == 0
    monkeypatch.setattr(outbox, "mark_relayed", real)

    assert await marks.flush() == 3
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL") == 0
    assert await marks.flush() == 0

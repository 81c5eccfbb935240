"""Never lost, never doubled: faults injected into the container stack.

Runs on ``make e2e STACK=compose`` (the stack plus ``tests-e2e/faults``'s SMTP
relay that refuses on demand). Each test restores the stack it found.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.signups import PASSWORD, fresh_address, sign_up
from herald_testing.waiting import eventually


async def sign_up_many(
    api: httpx.AsyncClient, count: int, *, concurrency: int = 8, into: list[str] | None = None
) -> list[str]:
    """``count`` signups, ``concurrency`` at a time; each must answer 202."""
    addresses = into if into is not None else []
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            addresses.append(await sign_up(api))

    await asyncio.gather(*(one() for _ in range(count)))
    return addresses


async def ready(api: httpx.AsyncClient) -> bool:
    try:
        return (await api.get("/health/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_1_redis_outage_during_100_signups_loses_nothing(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose("stop", "redis")
    try:
        addresses = await sign_up_many(api, 100)
    finally:
        # The clock starts before Redis does: its boot counts against the 5 s.
        back = time.monotonic()
        compose("up", "--detach", "--wait", "redis")

    counts = await inbox.wait_for_all(addresses, within=5.0)

    drained = time.monotonic() - back
    print(f"\n[fault 1] 100 emails delivered {drained:.2f} s after Redis was started again")
    assert counts == dict.fromkeys(addresses, 1)


async def test_2_a_crash_between_commit_and_push_still_delivers(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose("up", "--detach", "--wait", "api", env={"HERALD_FAULT_EXIT_AFTER_COMMIT": "true"})
    address = fresh_address()
    try:
        with pytest.raises(httpx.HTTPError):
            await api.post(
                "/api/v1/users",
                json={"email": address, "password": PASSWORD, "display_name": "Crash"},
            )
        await inbox.wait_for_email(address, within=60.0)
    finally:
        compose("up", "--detach", "--wait", "api")
    assert compose.sql(f"SELECT count(*) FROM users WHERE email = '{address}'") == "1"
    assert len(await inbox.emails_to(address)) == 1


async def test_3_notifier_sigkilled_twice_mid_batch_loses_nothing(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    addresses: list[str] = []
    batch = asyncio.create_task(sign_up_many(api, 200, concurrency=4, into=addresses))
    for at in (60, 140):
        while len(addresses) < at:
            assert not batch.done(), "the signups ended early"
            await asyncio.sleep(0.1)
        compose("kill", "--signal", "SIGKILL", "notifier")
        compose("up", "--detach", "--wait", "notifier")
    await batch

    counts = await inbox.wait_for_all(addresses, within=180.0)

    duplicates = {address: n for address, n in counts.items() if n > 1}
    print(f"\n[fault 3] 200 signups, notifier SIGKILLed twice: duplicates={len(duplicates)}")
    assert len(counts) == 200


async def test_4_smtp_refusing_a_fifth_delivers_all_and_dead_letters_a_bounce_once(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose.set_smtp_refuse_ratio(0.2)
    try:
        addresses = await sign_up_many(api, 50)
        bounce = f"bounce-{uuid.uuid4().hex[:8]}@example.com"
        response = await api.post(
            "/api/v1/users", json={"email": bounce, "password": PASSWORD, "display_name": "B"}
        )
        assert response.status_code == 202
        counts = await inbox.wait_for_all(addresses, within=120.0)
    finally:
        compose.set_smtp_refuse_ratio(0)

    assert counts == dict.fromkeys(addresses, 1)
    assert await inbox.emails_to(bounce) == []
    [letter] = [
        letter for letter in compose.dead_letters() if bounce in json.dumps(letter.get("payload"))
    ]
    assert letter["attempts"] == 1
    assert "550" in letter["reason"]


async def test_5_postgres_restart_gives_503_then_recovers_with_nothing_half_written(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    compose("stop", "postgres")
    try:
        body = {"email": fresh_address(), "password": PASSWORD, "display_name": "Down"}
        during = [(await api.post("/api/v1/users", json=body)).status_code for _ in range(5)]
        health = (await api.get("/health/ready")).status_code
    finally:
        compose("start", "postgres")
    await eventually(lambda: ready(api), within=60, what="the API ready again")

    address = await sign_up(api)
    await inbox.wait_for_email(address, within=10.0)

    assert during == [503] * 5
    assert health == 503
    assert compose.sql(f"SELECT count(*) FROM users WHERE email = '{body['email']}'") == "0"
    orphan_users = compose.sql(
        "SELECT count(*) FROM users u WHERE NOT EXISTS "
        "(SELECT 1 FROM outbox o WHERE o.payload->>'user_id' = u.id::text)"
    )
    orphan_rows = compose.sql(
        "SELECT count(*) FROM outbox o WHERE NOT EXISTS "
        "(SELECT 1 FROM users u WHERE u.id::text = o.payload->>'user_id')"
    )
    assert (orphan_users, orphan_rows) == ("0", "0")


MALFORMED = """
import asyncio, sys
from saq import Job
from herald_notifier.settings import Settings
from herald_shared import queues

async def main() -> None:
    settings = Settings()
    queue = queues.connect_queue(
        settings.redis_url, queues.NOTIFIER, namespace=settings.queue_namespace
    )
    payload = {"schema_version": 1, "message_id": sys.argv[1], "user_id": "not-a-uuid",
               "email": "x@example.com", "display_name": "X",
               "requested_at": "2026-11-28T00:00:00+00:00"}
    await queue.enqueue(Job(function="send_welcome_email", kwargs={"payload": payload},
                            key=sys.argv[1], retries=5))
    await queue.disconnect()

asyncio.run(main())
"""


async def test_6_a_malformed_message_is_dead_lettered_and_others_still_flow(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    key = str(uuid.uuid4())
    compose("exec", "-T", "notifier", "python", "-c", MALFORMED, key)

    address = await sign_up(api)
    await inbox.wait_for_email(address, within=10.0)

    async def dead_lettered() -> bool:
        return any(key in json.dumps(letter) for letter in compose.dead_letters())

    await eventually(dead_lettered, within=20, what="the malformed job dead-lettered")
    [letter] = [letter for letter in compose.dead_letters() if key in json.dumps(letter)]
    assert "user_id" in letter["reason"]
    assert letter["attempts"] == 1

"""Admission control: past the bound on password hashes or pooled connections, a request
gets 503 with Retry-After at once, is counted and logged; the rest are served, the probes
answer throughout, and the API takes requests again once the burst is over.

The bound is made small (one hash thread, one waiting hash; one pooled connection) and
the hashes slow (argon2id t=12, about 0.2 s here), so a burst of a few requests fills it.
"""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from structlog.testing import capture_logs

from herald_api.core.admission import OVERLOADED
from herald_api.core.settings import Settings
from herald_testing.waiting import eventually

BURST = 8
"""Requests sent at once: far more than the 2 hashes the bound admits."""

PASSWORD = "correct horse battery"
VERIFY = "/api/v1/auth/verify"
UNKNOWN_TOKEN = {"token": "A" * 43}

NEVER_SHED = {
    ("get", "/health/live"),
    ("get", "/health/ready"),
    # Answered before any work: the lookup and the email run after the response.
    ("post", "/api/v1/auth/password/forgot"),
    ("post", "/api/v1/auth/verify/resend"),
}
"""Operations that neither hash nor wait for a pooled connection before answering."""


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "hash_workers": 1,
            "hash_queue_depth": 1,
            "argon2_time_cost": 12,
            "internal_token": SecretStr("internal-token-for-tests-only"),
        }
    )


def shed_count(resource: str) -> float:
    return REGISTRY.get_sample_value("herald_api_requests_shed_total", {"resource": resource}) or 0


def signup(n: int) -> dict[str, str]:
    return {"email": f"burst{n}@example.com", "password": PASSWORD, "display_name": f"B{n}"}


def assert_shed(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.json() == {"detail": OVERLOADED}
    assert response.headers["Retry-After"] == "1"


async def test_signups_past_the_hash_bound_are_shed_and_the_admitted_ones_created(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    shed_before = shed_count("hash")

    with capture_logs() as logs:
        answers = await asyncio.gather(
            *(client.post("/api/v1/users", json=signup(n)) for n in range(BURST))
        )

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {202, 503}, statuses
    shed = [answer for answer in answers if answer.status_code == 503]
    for answer in shed:
        assert_shed(answer)
    accepted = {signup(n)["email"] for n, status in enumerate(statuses) if status == 202}
    # The one running and the one waiting were admitted; the others found the queue full.
    assert len(accepted) >= 2
    assert shed
    assert shed_count("hash") == shed_before + len(shed)
    sheds = [entry for entry in logs if entry["event"] == "admission.shed"]
    assert len(sheds) == len(shed)
    assert {entry["resource"] for entry in sheds} == {"hash"}
    assert not any("burst" in str(value) for entry in sheds for value in entry.values())

    stored = await db.fetch("SELECT email FROM users")
    assert {row["email"] for row in stored} == accepted
    welcomes = await db.fetchval("SELECT count(*) FROM outbox WHERE task = 'send_welcome_email'")
    assert welcomes == len(accepted)

    # The burst is over: the next signup is admitted again.
    assert (await client.post("/api/v1/users", json=signup(BURST))).status_code == 202


async def test_logins_past_the_hash_bound_are_shed_alike_for_any_address(
    client: httpx.AsyncClient,
) -> None:
    forms = [{"username": f"nobody{n}@example.com", "password": PASSWORD} for n in range(BURST)]

    answers = await asyncio.gather(
        *(client.post("/api/v1/auth/token", data=form) for form in forms)
    )

    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {401, 503}, statuses
    assert statuses.count(401) >= 2
    for answer in answers:
        if answer.status_code == 503:
            assert_shed(answer)
    assert 503 in statuses


async def test_the_probes_answer_while_the_hash_queue_is_full(
    client: httpx.AsyncClient,
) -> None:
    signups = [
        asyncio.create_task(client.post("/api/v1/users", json=signup(n))) for n in range(BURST)
    ]
    # The first answer is a shed one: the queue is full, its hashes still running.
    first = await next(asyncio.as_completed(signups))
    assert_shed(first)

    live = await client.get("/health/live")
    ready = await client.get("/health/ready")
    still_hashing = sum(not task.done() for task in signups)

    assert live.status_code == 200
    assert ready.status_code == 200
    # Answered before the admitted signups were: the probes never waited for a hash.
    assert still_hashing >= 1
    answers = await asyncio.gather(*signups)
    assert {answer.status_code for answer in answers} <= {202, 503}


class TestOnePooledConnection:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={"database_pool_size": 1, "database_max_overflow": 0, "argon2_time_cost": 2}
        )

    async def test_a_request_past_the_pool_is_shed_at_once_and_served_once_it_frees(
        self, client: httpx.AsyncClient, db: asyncpg.Connection, database_url: str
    ) -> None:
        shed_before = shed_count("database")
        # A signup holds the pool's only connection: its outbox insert waits for this lock.
        locker = await asyncpg.connect(database_url)
        await locker.execute("BEGIN; LOCK TABLE outbox IN SHARE MODE")
        held = asyncio.create_task(client.post("/api/v1/users", json=signup(0)))
        try:
            await eventually(
                lambda: db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO outbox%'"
                ),
                "the signup waits for its outbox insert",
            )

            # The hang guard only: before admission control this waited 30 s for the pool.
            answer = await asyncio.wait_for(client.post(VERIFY, json=UNKNOWN_TOKEN), timeout=10)
            live = await client.get("/health/live")
            ready = await client.get("/health/ready")
            assert not held.done()
        finally:
            await locker.close()

        assert_shed(answer)
        assert shed_count("database") == shed_before + 1
        # The probes never wait for the requests' pool.
        assert live.status_code == 200
        assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}
        # The lock is gone: the held signup goes through, and the pool serves again
        # (an unknown token, answered from the database).
        assert (await asyncio.wait_for(held, timeout=10)).status_code == 202
        assert (await client.post(VERIFY, json=UNKNOWN_TOKEN)).status_code == 400
        assert await db.fetchval("SELECT count(*) FROM outbox") == 1


async def test_the_503_is_documented_on_every_route_that_can_shed(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    operations = [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if (method, path) not in NEVER_SHED
    ]
    assert len(operations) >= 12  # the public API and the internal endpoints

    for method, path, operation in operations:
        answer = operation["responses"].get("503")
        assert answer is not None, f"{method.upper()} {path}"
        assert OVERLOADED in answer["description"], f"{method.upper()} {path}"
        assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}

"""A Redis outage must not cost a signup, nor its welcome email."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_testing.ports import free_port


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})


async def test_signup_succeeds_and_logs_the_user_when_redis_is_down(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = {"email": "grace@example.com", "password": "a long password", "display_name": "Grace"}
    failed = {"message_type": "WelcomeEmail"}
    failed_before = REGISTRY.get_sample_value("herald_api_messages_enqueue_failed_total", failed)
    with capture_logs() as logs:
        response = await client.post("/api/v1/users", json=body)

    assert response.status_code == 202
    user_id = str(await db.fetchval("SELECT id FROM users WHERE email = 'grace@example.com'"))
    failures = [line for line in logs if line["event"] == "message.enqueue_failed"]
    assert len(failures) == 1
    assert failures[0]["user_id"] == user_id
    assert failures[0]["log_level"] == "error"
    failed_after = REGISTRY.get_sample_value("herald_api_messages_enqueue_failed_total", failed)
    assert failed_before is not None
    assert failed_after == failed_before + 1

    # The message waits in the outbox, due at once (not after the fast path's
    # grace period), for the relay.
    [row] = await db.fetch("SELECT * FROM outbox")
    assert str(row["message_id"]) == failures[0]["message_id"]
    assert row["relayed_at"] is None
    assert row["attempts"] >= 1
    assert "ConnectionError" in row["last_error"]
    assert await db.fetchval("SELECT available_at < created_at + interval '1 second' FROM outbox")


async def test_readiness_reports_redis_down_with_503(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error")

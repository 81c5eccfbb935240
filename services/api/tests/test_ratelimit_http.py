"""Rate limits through the real endpoints: 429 with Retry-After, documented, never an outage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY
from starlette.types import ASGIApp
from structlog.testing import capture_logs

from herald_api import cli
from herald_api.core.settings import Settings
from herald_api.main import create_app
from herald_testing.ports import free_port
from herald_testing.ratelimits import assert_too_many

PASSWORD = "correct horse battery staple"
RATE_LIMITED_ROUTES = [
    ("post", "/api/v1/users"),
    ("post", "/api/v1/auth/token"),
    ("post", "/api/v1/auth/verify/resend"),
    ("post", "/api/v1/auth/refresh"),
]

ClientFrom = Callable[[str], httpx.AsyncClient]


def signup(email: str) -> dict[str, str]:
    return {"email": email, "password": PASSWORD, "display_name": "Ada"}


def refused_count(action: str, scope: str) -> float:
    labels = {"action": action, "scope": scope}
    return REGISTRY.get_sample_value("herald_api_rate_limited_total", labels) or 0.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "rate_limits_enabled": True,
            "rate_limit_signup_per_client": "4/hour",
            "rate_limit_signup_per_email": "2/hour",
            "rate_limit_resend_per_email": "1/hour",
            "rate_limit_login_per_client": "5/minute",
            "rate_limit_login_per_email": "2/15minutes",
            # These tests count limits, not the fail-open path: a loaded machine
            # must not turn a slow Redis answer into an unlimited attempt.
            "rate_limit_timeout_seconds": 5.0,
        }
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[ASGIApp]:
    async with LifespanManager(create_app(settings)) as manager:
        yield manager.app


@pytest.fixture
async def client_from(app: ASGIApp) -> AsyncIterator[ClientFrom]:
    """HTTP clients of the app, each from the client address it is given."""
    opened: list[httpx.AsyncClient] = []

    def make(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 50_000))
        http = httpx.AsyncClient(transport=transport, base_url="http://herald.test")
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


async def test_signups_for_one_address_stop_at_its_limit_from_any_client(
    client_from: ClientFrom,
) -> None:
    before = refused_count("signup", "email")
    first, second, third = (client_from(f"198.51.100.{n}") for n in (1, 2, 3))
    assert (await first.post("/api/v1/users", json=signup("ada@example.com"))).status_code == 202
    assert (await second.post("/api/v1/users", json=signup("ada@example.com"))).status_code == 202

    with capture_logs() as logs:
        response = await third.post("/api/v1/users", json=signup("ada@example.com"))

    retry_after = assert_too_many(response, window_seconds=3600)
    assert retry_after > 3500
    assert refused_count("signup", "email") == before + 1
    [line] = [line for line in logs if line["event"] == "rate_limit.exceeded"]
    assert (line["action"], line["scope"], line["client"]) == ("signup", "email", "198.51.100.3")
    assert "ada@example.com" not in repr(logs)
    # Other addresses are unaffected, from the same client too.
    grace = await third.post("/api/v1/users", json=signup("grace@example.com"))
    assert grace.status_code == 202


async def test_signups_from_one_client_stop_at_its_limit(client_from: ClientFrom) -> None:
    busy, other = client_from("203.0.113.9"), client_from("203.0.113.10")
    for n in range(4):
        response = await busy.post("/api/v1/users", json=signup(f"user{n}@example.com"))
        assert response.status_code == 202

    response = await busy.post("/api/v1/users", json=signup("user4@example.com"))

    assert_too_many(response, window_seconds=3600)
    response = await other.post("/api/v1/users", json=signup("user4@example.com"))
    assert response.status_code == 202


async def test_verification_resends_stop_at_the_per_address_limit(
    client_from: ClientFrom,
) -> None:
    http = client_from("198.51.100.20")
    body = {"email": "ada@example.com"}
    assert (await http.post("/api/v1/auth/verify/resend", json=body)).status_code == 202

    response = await http.post("/api/v1/auth/verify/resend", json=body)

    assert_too_many(response, window_seconds=3600)
    other = await http.post("/api/v1/auth/verify/resend", json={"email": "grace@example.com"})
    assert other.status_code == 202


async def test_logins_for_one_address_stop_before_the_password_is_checked(
    client_from: ClientFrom,
) -> None:
    before = refused_count("login", "email")
    http = client_from("198.51.100.40")
    form = {"username": "ada@example.com", "password": "not the password"}
    for _ in range(2):
        assert (await http.post("/api/v1/auth/token", data=form)).status_code == 401

    response = await http.post("/api/v1/auth/token", data=form)

    assert_too_many(response, window_seconds=15 * 60)
    assert refused_count("login", "email") == before + 1
    # The same address in other letters is the same address.
    shouted = form | {"username": "ADA@example.com"}
    assert (await http.post("/api/v1/auth/token", data=shouted)).status_code == 429
    other = form | {"username": "grace@example.com"}
    assert (await http.post("/api/v1/auth/token", data=other)).status_code == 401


async def test_logins_from_one_client_stop_at_its_limit(client_from: ClientFrom) -> None:
    busy, other = client_from("198.51.100.41"), client_from("198.51.100.42")
    for n in range(5):
        form = {"username": f"user{n}@example.com", "password": "not the password"}
        assert (await busy.post("/api/v1/auth/token", data=form)).status_code == 401

    # Not even an email address: still counted per client.
    form = {"username": "not-an-address", "password": "not the password"}
    assert_too_many(await busy.post("/api/v1/auth/token", data=form), window_seconds=60)
    assert (await other.post("/api/v1/auth/token", data=form)).status_code == 401


@pytest.mark.parametrize(("method", "path"), RATE_LIMITED_ROUTES)
async def test_429_and_retry_after_are_documented(
    client_from: ClientFrom, method: str, path: str
) -> None:
    schema = (await client_from("127.0.0.1").get("/openapi.json")).json()

    answer = schema["paths"][path][method]["responses"]["429"]

    assert answer["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}


class TestRedisDown:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={
                "redis_url": f"redis://127.0.0.1:{free_port()}/0",
                "rate_limit_signup_per_client": "1/hour",
            }
        )

    async def test_signups_go_on_unlimited_and_fast(self, client_from: ClientFrom) -> None:
        http = client_from("198.51.100.30")
        failed_before = REGISTRY.get_sample_value(
            "herald_api_rate_limit_fail_open_total", {"action": "signup", "reason": "redis"}
        )

        started = time.monotonic()
        for n in range(10):
            response = await http.post("/api/v1/users", json=signup(f"down{n}@example.com"))
            assert response.status_code == 202
        elapsed = time.monotonic() - started

        # argon2 dominates; a rate-limit timeout per signup would add 2.5 s.
        assert elapsed < 5
        failed_after = REGISTRY.get_sample_value(
            "herald_api_rate_limit_fail_open_total", {"action": "signup", "reason": "redis"}
        )
        assert failed_before is not None
        assert failed_after is not None
        assert failed_after >= failed_before + 1


def test_serve_passes_the_trusted_proxies_to_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: dict[str, Any] = {}
    settings = Settings.model_construct(forwarded_allow_ips="10.0.0.0/8")
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    monkeypatch.setattr(cli, "configure_logging", lambda **_: None)
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: ran.update(kwargs))

    cli.main(["serve"])

    assert ran["proxy_headers"] is True
    assert ran["forwarded_allow_ips"] == "10.0.0.0/8"

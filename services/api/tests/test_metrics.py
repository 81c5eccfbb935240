"""The API's metrics: requests by route template and status, signups, enqueued messages,
served on a port of their own.

The default registry lives as long as the test process, so each test compares
values before and after what it does.
"""

from __future__ import annotations

import httpx
from asgi_lifespan import LifespanManager
from prometheus_client import REGISTRY

from herald_api.core.metrics import UNMATCHED
from herald_api.core.settings import Settings
from herald_api.main import create_app
from herald_testing.ports import free_port

SIGNUP = {"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}


def value(name: str, **labels: str) -> float:
    """The current value of one sample of the default registry (0 if absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(method: str, route: str, status: str) -> float:
    return value("herald_api_http_requests_total", method=method, route=route, status=status)


async def test_signups_are_counted_by_outcome_under_their_route_template(
    client: httpx.AsyncClient,
) -> None:
    created = value("herald_api_signups_total", outcome="created")
    taken = value("herald_api_signups_total", outcome="address_taken")
    accepted = requests("POST", "/api/v1/users", "202")
    timed = value(
        "herald_api_http_request_duration_seconds_count", method="POST", route="/api/v1/users"
    )
    welcomes = value("herald_api_messages_enqueued_total", message_type="WelcomeEmail")
    notices = value("herald_api_messages_enqueued_total", message_type="AccountExistsEmail")

    assert (await client.post("/api/v1/users", json=SIGNUP)).status_code == 202
    assert (await client.post("/api/v1/users", json=SIGNUP)).status_code == 202

    assert value("herald_api_signups_total", outcome="created") == created + 1
    assert value("herald_api_signups_total", outcome="address_taken") == taken + 1
    assert requests("POST", "/api/v1/users", "202") == accepted + 2
    assert (
        value(
            "herald_api_http_request_duration_seconds_count",
            method="POST",
            route="/api/v1/users",
        )
        == timed + 2
    )
    assert value("herald_api_messages_enqueued_total", message_type="WelcomeEmail") == (
        welcomes + 1
    )
    assert value("herald_api_messages_enqueued_total", message_type="AccountExistsEmail") == (
        notices + 1
    )


async def test_metrics_are_not_served_on_the_api_port(client: httpx.AsyncClient) -> None:
    # Signups by outcome would tell anyone whether an address has an account.
    await client.post("/api/v1/users", json=SIGNUP)

    response = await client.get("/metrics")

    assert response.status_code == 404
    assert "herald_api" not in response.text


async def test_errors_and_unknown_paths_keep_a_bounded_label(client: httpx.AsyncClient) -> None:
    unknown = requests("GET", UNMATCHED, "404")
    invalid = requests("POST", "/api/v1/users", "422")
    odd_method = requests("OTHER", UNMATCHED, "404")

    assert (await client.get("/no/such/path/123")).status_code == 404
    assert (await client.post("/api/v1/users", json={"email": "x"})).status_code == 422
    assert (await client.request("BREW", "/coffee")).status_code == 404

    assert requests("GET", UNMATCHED, "404") == unknown + 1
    assert requests("POST", "/api/v1/users", "422") == invalid + 1
    assert requests("OTHER", UNMATCHED, "404") == odd_method + 1


async def test_health_routes_are_labelled_by_their_paths(client: httpx.AsyncClient) -> None:
    live = requests("GET", "/health/live", "200")

    await client.get("/health/live")

    assert requests("GET", "/health/live", "200") == live + 1


async def test_the_metrics_server_serves_every_series_from_the_start(
    settings: Settings,
) -> None:
    """``HERALD_METRICS_PORT``: the API process's own metrics server, outbox series included
    before anything happened."""
    port = free_port()
    app = create_app(
        settings.model_copy(update={"metrics_port": port, "metrics_host": "127.0.0.1"})
    )
    async with LifespanManager(app), httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")

    assert response.status_code == 200
    text = response.text
    assert "herald_api_outbox_pending " in text
    assert 'herald_api_outbox_relayed_total{message_type="WelcomeEmail"}' in text
    for reason in ("redis", "database", "rejected", "other"):
        assert f'herald_api_outbox_relay_errors_total{{reason="{reason}"}}' in text

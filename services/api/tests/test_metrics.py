"""``GET /metrics``: requests by route template and status, signups, enqueued messages.

The default registry lives as long as the test process, so each test compares
values before and after what it does.
"""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from herald_api.metrics import UNMATCHED

SIGNUP = {"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"}


def value(name: str, **labels: str) -> float:
    """The current value of one sample of the default registry (0 if absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests(method: str, route: str, status: str) -> float:
    return value("herald_api_http_requests_total", method=method, route=route, status=status)


async def test_a_signup_is_counted_under_its_route_template(client: httpx.AsyncClient) -> None:
    signups = value("herald_api_signups_total")
    created = requests("POST", "/api/v1/users", "201")
    read = requests("GET", "/api/v1/users/{user_id}", "200")
    timed = value(
        "herald_api_http_request_duration_seconds_count", method="POST", route="/api/v1/users"
    )
    enqueued = value("herald_api_messages_enqueued_total", message_type="WelcomeEmail")

    response = await client.post("/api/v1/users", json=SIGNUP)
    assert response.status_code == 201
    assert (await client.get(response.headers["Location"])).status_code == 200
    scraped = await client.get("/metrics")

    assert value("herald_api_signups_total") == signups + 1
    assert requests("POST", "/api/v1/users", "201") == created + 1
    assert requests("GET", "/api/v1/users/{user_id}", "200") == read + 1
    assert (
        value(
            "herald_api_http_request_duration_seconds_count",
            method="POST",
            route="/api/v1/users",
        )
        == timed + 1
    )
    assert value("herald_api_messages_enqueued_total", message_type="WelcomeEmail") == (
        enqueued + 1
    )
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert f"herald_api_signups_total {value('herald_api_signups_total')}" in text
    assert (
        'herald_api_http_requests_total{method="POST",route="/api/v1/users",status="201"} '
        f"{requests('POST', '/api/v1/users', '201')}"
    ) in text
    # The raw path (with the user's id) never becomes a label.
    assert response.json()["id"] not in text


async def test_errors_and_unknown_paths_keep_a_bounded_label(client: httpx.AsyncClient) -> None:
    unknown = requests("GET", UNMATCHED, "404")
    invalid = requests("GET", "/api/v1/users/{user_id}", "422")
    taken = requests("POST", "/api/v1/users", "409")
    odd_method = requests("OTHER", UNMATCHED, "404")

    assert (await client.get("/no/such/path/123")).status_code == 404
    assert (await client.get("/api/v1/users/not-a-uuid")).status_code == 422
    await client.post("/api/v1/users", json=SIGNUP)
    assert (await client.post("/api/v1/users", json=SIGNUP)).status_code == 409
    assert (await client.request("BREW", "/coffee")).status_code == 404

    assert requests("GET", UNMATCHED, "404") == unknown + 1
    assert requests("GET", "/api/v1/users/{user_id}", "422") == invalid + 1
    assert requests("POST", "/api/v1/users", "409") == taken + 1
    assert requests("OTHER", UNMATCHED, "404") == odd_method + 1


async def test_health_and_metrics_routes_are_labelled_by_their_paths(
    client: httpx.AsyncClient,
) -> None:
    live = requests("GET", "/health/live", "200")
    scrapes = requests("GET", "/metrics", "200")

    await client.get("/health/live")
    await client.get("/metrics")

    assert requests("GET", "/health/live", "200") == live + 1
    assert requests("GET", "/metrics", "200") == scrapes + 1


async def test_metrics_stay_out_of_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    assert "/metrics" not in schema["paths"]
    assert "/api/v1/users" in schema["paths"]


async def test_outbox_series_are_exported_before_anything_happens(
    client: httpx.AsyncClient,
) -> None:
    text = (await client.get("/metrics")).text

    assert "herald_api_outbox_pending " in text
    assert 'herald_api_outbox_relayed_total{message_type="WelcomeEmail"}' in text
    for reason in ("redis", "database", "rejected", "other"):
        assert f'herald_api_outbox_relay_errors_total{{reason="{reason}"}}' in text

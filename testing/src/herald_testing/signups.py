"""Signing up through the API, as the e2e tests do it."""

from __future__ import annotations

import uuid

import httpx

PASSWORD = "a long enough password"

REFRESH_GRACE_SECONDS = 5
"""The e2e stacks' HERALD_REFRESH_GRACE_SECONDS (the default): how long a replayed
refresh token is still a client's own race rather than a reuse."""


def fresh_address() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}@example.com"


async def sign_up(
    api: httpx.AsyncClient,
    *,
    display_name: str = "E2E",
    request_id: str | None = None,
    locale: str | None = None,
) -> str:
    """Sign a fresh address up (asserting 202), in ``locale`` if given (else the API's
    choice); return the address."""
    address = fresh_address()
    headers = {"X-Request-ID": request_id} if request_id else {}
    body = {"email": address, "password": PASSWORD, "display_name": display_name}
    response = await api.post(
        "/api/v1/users",
        json=body if locale is None else body | {"locale": locale},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return address

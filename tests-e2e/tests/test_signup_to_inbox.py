"""Sign up over HTTP; the welcome email lands in the inbox."""

from __future__ import annotations

import httpx

from herald_testing.maildev import MailDevClient
from herald_testing.signups import PASSWORD, fresh_address, sign_up


async def test_signup_delivers_a_welcome_email_within_5_seconds(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = await sign_up(api, display_name="Émile Zola")

    email = await inbox.wait_for_email(address, within=5.0)

    assert email["to"] == [{"address": address, "name": "Émile Zola"}]
    assert "Émile Zola" in email["text"]
    assert "Émile Zola" in email["html"]
    assert "Welcome" in email["subject"]


async def test_each_signup_gets_exactly_one_email(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    addresses = [await sign_up(api) for _ in range(5)]

    for address in addresses:
        await inbox.wait_for_email(address, within=5.0)
    for address in addresses:
        assert len(await inbox.emails_to(address)) == 1


async def test_the_api_is_ready_and_rejects_a_duplicate(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health/ready")).status_code == 200
    body = {"email": fresh_address(), "password": PASSWORD, "display_name": "Dup"}

    assert (await api.post("/api/v1/users", json=body)).status_code == 201
    assert (await api.post("/api/v1/users", json=body)).status_code == 409

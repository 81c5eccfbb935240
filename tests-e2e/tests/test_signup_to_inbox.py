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


async def test_signing_up_twice_answers_the_same_and_warns_the_owner(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    assert (await api.get("/health/ready")).status_code == 200
    address = fresh_address()
    body = {"email": address, "password": PASSWORD, "display_name": "Dup"}

    first = await api.post("/api/v1/users", json=body)
    again = await api.post("/api/v1/users", json=body | {"display_name": "Someone else"})

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    emails = await inbox.wait_for_all([address], within=5.0, count=2)
    subjects = sorted(email["subject"] for email in await inbox.emails_to(address))
    assert emails[address] == 2
    assert any("Welcome" in subject for subject in subjects)
    assert any("sign up" in subject.lower() for subject in subjects), subjects

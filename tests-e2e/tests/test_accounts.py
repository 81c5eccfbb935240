"""The accounts API end to end: verify by the emailed link, log in, stay unenumerable,
keep every secret out of the logs, and keep email headers whole."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from herald_testing.compose import Compose
from herald_testing.maildev import MailDevClient
from herald_testing.signups import PASSWORD, REFRESH_GRACE_SECONDS, fresh_address, sign_up

# The page, its query (the reader's language: ?lang=de) left out, and the token.
LINK = re.compile(
    r"(https?://[^\s\"'<>?#]+/verify-email)(?:\?[^\s\"'<>#]*)?#token=([A-Za-z0-9_-]{43})"
)
RESET_LINK = re.compile(
    r"(https?://[^\s\"'<>?#]+/reset-password)(?:\?[^\s\"'<>#]*)?#token=([A-Za-z0-9_-]{43})"
)
LINK_INVALID = "This verification link is invalid, expired or already used. Ask for a new one."


def link_in(message: dict[str, object], pattern: re.Pattern[str] = LINK) -> tuple[str, str]:
    """The link of an email (page URL, token; verification unless ``pattern`` says
    otherwise); the same in both parts."""
    text, html = str(message["text"]), str(message["html"])
    [(page, token)] = set(pattern.findall(text))
    assert (page, token) in set(pattern.findall(html))
    return str(page), str(token)


async def wait_for_logs(service_logs: Callable[[], str], request_id: str) -> str:
    """Every service's logs, once the request ``request_id`` has reached them."""
    # Logs are written (and, on containers, collected) asynchronously.
    deadline = time.monotonic() + 15
    while request_id not in (logs := service_logs()):
        assert time.monotonic() < deadline, "the last request never reached the logs"
        await asyncio.sleep(0.5)
    return logs


async def log_in(api: httpx.AsyncClient, address: str, password: str) -> httpx.Response:
    return await api.post(
        "/api/v1/auth/token",
        data={"username": address, "password": password},
        headers={"X-Request-ID": str(uuid.uuid4())},
    )


async def test_signup_then_the_link_then_login_and_no_secret_in_any_log(
    api: httpx.AsyncClient, inbox: MailDevClient, service_logs: Callable[[], str]
) -> None:
    address = await sign_up(api, display_name="Ada")
    welcome = await inbox.wait_for_email(address, within=10.0)
    page, token = link_in(welcome)

    assert (await log_in(api, address, PASSWORD)).status_code == 403  # not verified yet
    opened = await api.get(httpx.URL(page).path)
    assert opened.status_code == 200
    assert "location.hash" in opened.text
    verified = await api.post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True
    again = await api.post("/api/v1/auth/verify", json={"token": token})
    assert again.status_code == 200  # a second click is a success, not "invalid"...
    assert again.json()["status"] == "already_verified"
    assert set(again.json()) == {"status", "detail"}  # ...that tells nothing about the account
    unknown = await api.post("/api/v1/auth/verify", json={"token": token[::-1]})
    assert (unknown.status_code, unknown.json()) == (400, {"detail": LINK_INVALID})
    login = await log_in(api, address, PASSWORD)
    assert login.status_code == 200
    access_token, refresh_token = login.json()["access_token"], login.json()["refresh_token"]
    me = await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {access_token}"})
    assert me.status_code == 200
    assert me.json()["email"] == address
    last = str(uuid.uuid4())
    wrong = await api.post(
        "/api/v1/auth/token",
        data={"username": address, "password": "not the password"},
        headers={"X-Request-ID": last},
    )
    assert wrong.status_code == 401

    logs = await wait_for_logs(service_logs, last)
    assert address.split("@")[0] in logs or "user.created" in logs  # the flow was logged
    for secret in (PASSWORD, "not the password", token, access_token, refresh_token, "$argon2"):
        assert secret not in logs, f"a secret reached the logs: {secret[:12]}..."


async def refresh(api: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await api.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": refresh_token},
        headers={"X-Request-ID": str(uuid.uuid4())},
    )


async def test_a_replayed_refresh_token_ends_the_session_and_emails_its_owner(
    api: httpx.AsyncClient, inbox: MailDevClient, service_logs: Callable[[], str]
) -> None:
    address = await sign_up(api)
    _, verify_token = link_in(await inbox.wait_for_email(address, within=10.0))
    assert (await api.post("/api/v1/auth/verify", json={"token": verify_token})).status_code == 200
    login = await api.post(
        "/api/v1/auth/token",
        data={"username": address, "password": PASSWORD},
        headers={"User-Agent": "HeraldPhone/2.1 (e2e)"},
    )
    first = login.json()
    rotated = await refresh(api, first["refresh_token"])
    assert rotated.status_code == 200
    second = rotated.json()
    await asyncio.sleep(REFRESH_GRACE_SECONDS + 1)  # past the window for a client's race

    last = str(uuid.uuid4())
    replayed = await api.post(
        "/api/v1/auth/refresh",
        json={"refresh_token": first["refresh_token"]},
        headers={"X-Request-ID": last},
    )

    assert replayed.status_code == 401
    # The whole session ended: its newest tokens too.
    assert (await refresh(api, second["refresh_token"])).status_code == 401
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await api.get("/api/v1/users/me", headers=bearer)).status_code == 401
    await inbox.wait_for_all([address], within=10.0, count=2)
    [notice] = [
        message
        for message in await inbox.emails_to(address)
        if message["subject"] == "A Herald session was signed out for your safety"
    ]
    for body in (str(notice["text"]), str(notice["html"])):
        assert "so we signed that session out." in " ".join(body.split())
        assert "HeraldPhone/2.1 (e2e)" in body
    logs = await wait_for_logs(service_logs, last)
    assert "session.reuse_detected" in logs
    for secret in (*first.values(), *second.values()):
        if len(str(secret)) > 20:  # the tokens, not "bearer" or the lifetime
            assert str(secret) not in logs, f"a secret reached the logs: {str(secret)[:12]}..."


async def test_a_retried_signup_with_an_idempotency_key_sends_one_email(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = fresh_address()
    body = {"email": address, "password": PASSWORD, "display_name": "Ada"}
    key = {"Idempotency-Key": str(uuid.uuid4())}

    first = await api.post("/api/v1/users", json=body, headers=key)
    retry = await api.post("/api/v1/users", json=body, headers=key)

    assert first.status_code == retry.status_code == 202
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    # A later signup's email arriving means the retry's would have arrived by now.
    later = await sign_up(api)
    await inbox.wait_for_all([address, later], within=10.0)
    subjects = [message["subject"] for message in await inbox.emails_to(address)]
    assert subjects == ["Welcome to Herald"]


async def test_a_forgotten_password_is_reset_by_the_emailed_link(
    api: httpx.AsyncClient, inbox: MailDevClient, service_logs: Callable[[], str]
) -> None:
    address = await sign_up(api)
    _, verify_token = link_in(await inbox.wait_for_email(address, within=10.0))
    assert (await api.post("/api/v1/auth/verify", json={"token": verify_token})).status_code == 200
    before = (await log_in(api, address, PASSWORD)).json()["access_token"]

    forgot = await api.post("/api/v1/auth/password/forgot", json={"email": address})
    assert forgot.status_code == 202
    await inbox.wait_for_all([address], within=10.0, count=2)
    [email_with_link] = [
        message
        for message in await inbox.emails_to(address)
        if message["subject"] == "Reset your Herald password"
    ]
    page, token = link_in(email_with_link, RESET_LINK)
    opened = await api.get(httpx.URL(page).path)
    assert opened.status_code == 200
    assert 'autocomplete="new-password"' in opened.text
    new_password = f"new passphrase {uuid.uuid4().hex[:8]}"
    last = str(uuid.uuid4())
    reset = await api.post(
        "/api/v1/auth/password/reset",
        json={"token": token, "password": new_password},
        headers={"X-Request-ID": last},
    )

    assert reset.status_code == 200
    assert (await log_in(api, address, PASSWORD)).status_code == 401
    assert (await log_in(api, address, new_password)).status_code == 200
    old_session = await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {before}"})
    assert old_session.status_code == 401
    await inbox.wait_for_all([address], within=10.0, count=3)
    subjects = [message["subject"] for message in await inbox.emails_to(address)]
    assert subjects.count("Your Herald password was changed") == 1
    logs = await wait_for_logs(service_logs, last)
    for secret in (new_password, token, before):
        assert secret not in logs, f"a secret reached the logs: {secret[:12]}..."


async def test_changing_the_password_then_deleting_the_account(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = await sign_up(api)
    _, verify_token = link_in(await inbox.wait_for_email(address, within=10.0))
    assert (await api.post("/api/v1/auth/verify", json={"token": verify_token})).status_code == 200
    token = (await log_in(api, address, PASSWORD)).json()["access_token"]
    new_password = f"new passphrase {uuid.uuid4().hex[:8]}"

    changed = await api.post(
        "/api/v1/users/me/password",
        json={"current_password": PASSWORD, "new_password": new_password},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert changed.status_code == 200
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await api.get("/api/v1/users/me", headers=fresh)).status_code == 200
    await inbox.wait_for_all([address], within=10.0, count=2)
    subjects = [message["subject"] for message in await inbox.emails_to(address)]
    assert "Your Herald password was changed" in subjects

    deleted = await api.request(
        "DELETE", "/api/v1/users/me", json={"password": new_password}, headers=fresh
    )
    assert deleted.status_code == 204
    assert (await api.get("/api/v1/users/me", headers=fresh)).status_code == 401
    assert (await log_in(api, address, new_password)).status_code == 401


async def test_moving_the_account_to_another_address(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = await sign_up(api)
    _, verify_token = link_in(await inbox.wait_for_email(address, within=10.0))
    assert (await api.post("/api/v1/auth/verify", json={"token": verify_token})).status_code == 200
    token = (await log_in(api, address, PASSWORD)).json()["access_token"]
    new_address = fresh_address()

    asked = await api.post(
        "/api/v1/users/me/email",
        json={"password": PASSWORD, "new_email": new_address},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert asked.status_code == 202
    confirmation = await inbox.wait_for_email(new_address, within=10.0)
    assert confirmation["subject"] == "Confirm your new email address for Herald"
    page, change_token = link_in(confirmation)
    assert httpx.URL(page).path == "/verify-email"
    moved = await api.post("/api/v1/auth/verify", json={"token": change_token})

    assert moved.status_code == 200
    assert moved.json()["email"] == new_address
    assert (await log_in(api, new_address, PASSWORD)).status_code == 200
    assert (await log_in(api, address, PASSWORD)).status_code == 401
    await inbox.wait_for_all([address], within=10.0, count=2)
    subjects = [message["subject"] for message in await inbox.emails_to(address)]
    assert "Your Herald email address was changed" in subjects


async def test_login_failures_tell_nothing_about_the_account(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = await sign_up(api)
    _, token = link_in(await inbox.wait_for_email(address, within=10.0))
    assert (await api.post("/api/v1/auth/verify", json={"token": token})).status_code == 200

    wrong_password = await log_in(api, address, "not the password")
    unknown = await log_in(api, fresh_address(), "not the password")

    assert wrong_password.status_code == unknown.status_code == 401
    assert wrong_password.json() == unknown.json()
    assert wrong_password.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]


async def test_resend_voids_the_old_link_and_is_rate_limited_per_address(
    api: httpx.AsyncClient, inbox: MailDevClient
) -> None:
    address = await sign_up(api)
    _, old = link_in(await inbox.wait_for_email(address, within=10.0))

    resent = await api.post("/api/v1/auth/verify/resend", json={"email": address})
    assert resent.status_code == 202
    await inbox.wait_for_all([address], within=10.0, count=2)
    [fresh] = [
        message
        for message in await inbox.emails_to(address)
        if message["subject"] == "Verify your email address for Herald"
    ]
    _, new = link_in(fresh)
    assert (await api.post("/api/v1/auth/verify", json={"token": old})).status_code == 400
    assert (await api.post("/api/v1/auth/verify", json={"token": new})).status_code == 200

    # The default per-address limit: 3 resends an hour; the 4th is refused.
    answers = [
        await api.post("/api/v1/auth/verify/resend", json={"email": address}) for _ in range(3)
    ]
    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 3600


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r\nBcc: stolen@example.com",
        "Eve\nBcc: stolen@example.com",
        "Eve\rBcc: stolen@example.com",
        "Eve\u2028Bcc: stolen@example.com",
        "Eve\x00",
        "Eve\x1b[31m",
        "=?utf-8?q?Ada=0D=0ABcc:_stolen=40example.com?=",
    ],
    ids=["crlf", "lf", "cr", "line-separator", "nul", "escape", "encoded-word"],
)
async def test_a_display_name_that_could_break_a_header_is_refused(
    api: httpx.AsyncClient, name: str
) -> None:
    body = {"email": fresh_address(), "password": PASSWORD, "display_name": name}

    response = await api.post("/api/v1/users", json=body)

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "display_name"]]


@pytest.mark.parametrize(
    "name",
    [
        'Eve, "Bcc: stolen@example.com" <stolen@example.com>',
        "Ève Ünïcødé; Bcc: stolen@example.com",
        "Ada =? Lovelace ?=\\",
    ],
    ids=["quotes-and-brackets", "unicode-semicolon", "backslash-and-equals"],
)
async def test_a_hostile_display_name_stays_one_name_of_one_recipient(
    api: httpx.AsyncClient, inbox: MailDevClient, name: str
) -> None:
    address = await sign_up(api, display_name=name)
    received = await inbox.wait_for_email(address, within=10.0)

    assert [to["address"] for to in received["to"]] == [address]
    assert not received.get("cc")
    assert not received.get("bcc")
    parsed = email.message_from_string(
        await inbox.source(received["id"]), policy=email.policy.default
    )
    assert parsed.get_all("Bcc") is None
    assert parsed.get_all("Cc") is None
    assert len(parsed.get_all("To") or []) == 1
    [recipient] = parsed["To"].addresses
    assert (recipient.display_name, recipient.addr_spec) == (name, address)
    assert await inbox.emails_to("stolen@example.com") == []


async def test_an_unverified_user_gets_one_reminder_after_a_day(
    api: httpx.AsyncClient, inbox: MailDevClient, compose: Compose
) -> None:
    address = await sign_up(api)
    await inbox.wait_for_email(address, within=10.0)
    # A day passes for this user only (the reminder job runs every 2 s here).
    compose.sql(
        f"UPDATE users SET created_at = now() - interval '25 hours' WHERE email = '{address}'"
    )

    counts = await inbox.wait_for_all([address], within=20.0, count=2)
    await asyncio.sleep(5)  # two more ticks of the reminder job

    assert (await inbox.count_by_recipient([address]))[address] == counts[address] == 2
    subjects = sorted(message["subject"] for message in await inbox.emails_to(address))
    assert subjects == ["Reminder: verify your email address for Herald", "Welcome to Herald"]
    _, token = link_in(
        next(m for m in await inbox.emails_to(address) if m["subject"].startswith("Reminder"))
    )
    assert (await api.post("/api/v1/auth/verify", json={"token": token})).status_code == 200

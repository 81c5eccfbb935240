"""Cookie mode: the refresh token in an HttpOnly cookie scoped to the refresh route, for
browser apps, and the CSRF proofs a refresh by cookie needs."""

from __future__ import annotations

from http.cookies import SimpleCookie

import asyncpg
import httpx
import pytest

from herald_api.core.settings import Settings
from herald_testing.accounts import PASSWORD, add_user, bearer

TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"
LOGOUT_URL = "/api/v1/auth/logout"
ME_URL = "/api/v1/users/me"
COOKIE = "herald_refresh"
CSRF = {"X-Herald-CSRF": "1"}
CSRF_REFUSED = {
    "detail": "A refresh by cookie must come from this site's own scripts, with the header "
    "X-Herald-CSRF: 1."
}
INVALID_REFRESH = {"detail": "The refresh token is invalid or expired; log in again."}


def set_cookie(response: httpx.Response) -> SimpleCookie:
    """The refresh cookie ``response`` sets (parsed), asserting there is exactly one."""
    [header] = response.headers.get_list("set-cookie")
    cookie = SimpleCookie()
    cookie.load(header)
    assert list(cookie) == [COOKIE]
    return cookie


async def log_in_by_cookie(client: httpx.AsyncClient) -> tuple[str, str]:
    """Log in asking for the cookie: the access token and the cookie's token."""
    response = await client.post(
        TOKEN_URL,
        params={"refresh_token_in": "cookie"},
        data={"username": "ada@example.com", "password": PASSWORD},
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"], set_cookie(response)[COOKIE].value


async def refresh_by_cookie(
    client: httpx.AsyncClient, token: str, *, headers: dict[str, str] | None = None
) -> httpx.Response:
    # The cookie is sent as a browser would to its path; httpx's jar would not send a
    # Secure cookie over this test's plain HTTP.
    return await client.post(
        REFRESH_URL,
        headers={"Cookie": f"{COOKIE}={token}"} | (CSRF if headers is None else headers),
    )


async def test_a_cookie_login_keeps_the_refresh_token_out_of_reach_of_scripts(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    response = await client.post(
        TOKEN_URL,
        params={"refresh_token_in": "cookie"},
        data={"username": "ada@example.com", "password": PASSWORD},
    )

    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "token_type", "expires_in"}
    assert response.headers["Cache-Control"] == "no-store"
    morsel = set_cookie(response)[COOKIE]
    assert len(morsel.value) >= 43
    assert morsel["httponly"] is True
    assert morsel["secure"] is True
    assert morsel["samesite"] == "strict"
    assert morsel["path"] == REFRESH_URL
    assert int(morsel["max-age"]) == pytest.approx(settings.session_max_days * 86400, abs=5)
    assert response.json()["access_token"] not in str(morsel)
    assert (await client.get(ME_URL, headers=bearer(response.json()["access_token"]))).is_success


async def test_a_refresh_by_cookie_rotates_the_cookie_and_answers_no_token_in_the_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    _, first = await log_in_by_cookie(client)

    response = await refresh_by_cookie(client, first)

    assert response.status_code == 200
    assert set(response.json()) == {"access_token", "token_type", "expires_in"}
    second = set_cookie(response)[COOKIE].value
    assert second != first
    assert (await client.get(ME_URL, headers=bearer(response.json()["access_token"]))).is_success
    again = await refresh_by_cookie(client, second)
    assert again.status_code == 200
    # A token of the session replaced two rotations ago is a reuse, by cookie too.
    replayed = await refresh_by_cookie(client, first)
    assert (replayed.status_code, replayed.json()) == (401, INVALID_REFRESH)
    assert await db.fetchval("SELECT revoked_reason FROM sessions") == "reuse"


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a form another site posts, or a script without the header
        {"X-Herald-CSRF": "yes"},
        CSRF | {"Sec-Fetch-Site": "cross-site"},
        CSRF | {"Sec-Fetch-Site": "same-site"},  # another origin of the same site
    ],
    ids=["no-header", "wrong-value", "cross-site", "same-site"],
)
async def test_a_refresh_by_cookie_without_the_csrf_proofs_is_refused_and_spends_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, headers: dict[str, str]
) -> None:
    await add_user(db, settings)
    _, token = await log_in_by_cookie(client)
    before = await db.fetchrow("SELECT token_hash, last_used_at FROM sessions")

    refused = await refresh_by_cookie(client, token, headers=headers)

    assert (refused.status_code, refused.json()) == (403, CSRF_REFUSED)
    assert "set-cookie" not in refused.headers
    assert await db.fetchrow("SELECT token_hash, last_used_at FROM sessions") == before
    # The person's own page, with the header, still refreshes with the same cookie.
    own = await refresh_by_cookie(client, token, headers=CSRF | {"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200


async def test_a_refused_cookie_is_deleted(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    response = await refresh_by_cookie(client, "not-a-token-of-any-session")

    assert (response.status_code, response.json()) == (401, INVALID_REFRESH)
    morsel = set_cookie(response)[COOKIE]
    assert (morsel.value, morsel["max-age"], morsel["path"]) == ("", "0", REFRESH_URL)


async def test_a_body_token_wins_and_is_answered_in_the_body(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    body_login = await client.post(
        TOKEN_URL, data={"username": "ada@example.com", "password": PASSWORD}
    )
    _, cookie_token = await log_in_by_cookie(client)

    response = await client.post(
        REFRESH_URL,
        json={"refresh_token": body_login.json()["refresh_token"]},
        headers={"Cookie": f"{COOKIE}={cookie_token}"},
    )

    assert response.status_code == 200
    assert "refresh_token" in response.json()
    assert "set-cookie" not in response.headers
    # The cookie's session was not touched.
    assert (await refresh_by_cookie(client, cookie_token)).status_code == 200


async def test_a_refresh_with_no_token_at_all_is_the_one_401(client: httpx.AsyncClient) -> None:
    response = await client.post(REFRESH_URL, headers=CSRF)

    assert (response.status_code, response.json()) == (401, INVALID_REFRESH)


async def test_logout_ends_the_session_and_deletes_the_cookie(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    access, token = await log_in_by_cookie(client)

    response = await client.post(LOGOUT_URL, headers=bearer(access))

    assert response.status_code == 204
    morsel = set_cookie(response)[COOKIE]
    assert (morsel.value, morsel["max-age"], morsel["path"]) == ("", "0", REFRESH_URL)
    assert (await refresh_by_cookie(client, token)).status_code == 401


async def test_a_password_change_can_answer_with_the_cookie_too(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)
    access, old = await log_in_by_cookie(client)

    changed = await client.post(
        "/api/v1/users/me/password",
        params={"refresh_token_in": "cookie"},
        json={"current_password": PASSWORD, "new_password": "a quite different passphrase"},
        headers=bearer(access),
    )

    assert changed.status_code == 200
    assert "refresh_token" not in changed.json()
    new = set_cookie(changed)[COOKIE].value
    assert (await refresh_by_cookie(client, old)).status_code == 401
    assert (await refresh_by_cookie(client, new)).status_code == 200


async def test_the_openapi_schema_documents_cookie_mode(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    refresh = schema["paths"][REFRESH_URL]["post"]
    parameters = {(p["in"], p["name"]) for p in refresh["parameters"]}
    assert {("cookie", COOKIE), ("header", "X-Herald-CSRF")} <= parameters
    assert "403" in refresh["responses"]
    assert refresh["requestBody"].get("required") is not True
    login = schema["paths"][TOKEN_URL]["post"]
    assert ("query", "refresh_token_in") in {(p["in"], p["name"]) for p in login["parameters"]}

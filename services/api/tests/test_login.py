"""Logging in (POST /api/v1/auth/token) and reading one's own account (GET /api/v1/users/me)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from argon2 import extract_parameters
from structlog.testing import capture_logs

from herald_api.core.settings import Settings
from herald_testing.accounts import add_user, argon2, bearer
from herald_testing.clients import OpenClient

PASSWORD = "correct horse battery staple"
EMAIL = "ada@example.com"
INCORRECT = {"detail": "Incorrect email or password."}
UNVERIFIED = {"detail": "Verify your email address before logging in."}
TOKEN_URL = "/api/v1/auth/token"
ME_URL = "/api/v1/users/me"


@pytest.fixture
def secret(settings: Settings) -> str:
    return settings.jwt_secret.get_secret_value()


async def log_in(
    client: httpx.AsyncClient, username: str = EMAIL, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(TOKEN_URL, data={"username": username, "password": password})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand, for what pyjwt refuses to build (alg none, RS256 signed with HMAC)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.digest(key, signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(signature)}"


def claims_for(user_id: uuid.UUID, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "iss": "herald",
        "aud": "herald-api",
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
        "ver": 0,
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


# --- logging in -------------------------------------------------------------------------------


async def test_login_returns_a_bearer_token_for_the_user(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, secret: str
) -> None:
    user_id = await add_user(db, settings)

    before = int(time.time())
    response = await log_in(client)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, secret, algorithms=["HS256"], audience="herald-api", issuer="herald")
    assert set(claims) == {"sub", "iss", "aud", "iat", "exp", "jti", "ver", "sid"}
    assert claims["sub"] == str(user_id)
    assert claims["ver"] == 0
    assert before <= claims["iat"] <= time.time()
    assert claims["exp"] - claims["iat"] == 900


async def test_each_token_is_distinct(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    first = (await log_in(client)).json()["access_token"]
    second = (await log_in(client)).json()["access_token"]

    assert first != second


async def test_the_username_is_normalised_like_signup_stores_addresses(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    response = await log_in(client, username="  Ada@EXAMPLE.com ")

    assert response.status_code == 200


async def test_me_returns_the_token_owners_profile(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(db, settings)
    token = (await log_in(client)).json()["access_token"]

    response = await client.get(ME_URL, headers=bearer(token))

    assert response.status_code == 200
    profile = response.json()
    assert set(profile) == {
        "id",
        "email",
        "display_name",
        "created_at",
        "email_verified",
        "locale",
    }
    assert profile["id"] == str(user_id)
    assert profile["email"] == EMAIL
    assert profile["display_name"] == "Ada Lovelace"
    assert profile["email_verified"] is True
    assert profile["locale"] == "en"
    assert "argon2" not in response.text


async def test_wrong_password_unknown_and_invalid_emails_get_identical_answers(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    answers = [
        await log_in(client, password="wrong horse battery staple"),
        await log_in(client, username="nobody@example.com"),
        await log_in(client, username="not an email address"),
        # Not UTF-8 (an encoded lone surrogate): still just a wrong password.
        await client.post(
            TOKEN_URL,
            content=b"username=ada%40example.com&password=pass%ED%A0%80word",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]

    varying = {"x-request-id"}
    first = answers[0]
    assert first.status_code == 401
    assert first.json() == INCORRECT
    assert first.headers["WWW-Authenticate"] == "Bearer"
    for answer in answers:
        assert answer.status_code == first.status_code
        assert answer.content == first.content
        assert {k: v for k, v in answer.headers.items() if k not in varying} == {
            k: v for k, v in first.headers.items() if k not in varying
        }


async def test_an_unknown_email_costs_as_long_as_a_wrong_password(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    """The answer's timing must not tell which addresses have an account (ASVS 6.3.8).

    A wrong password costs an argon2id verification (~20-50 ms); without the
    dummy verification an unknown address would be answered in ~1-3 ms.
    Interleaved samples and medians with a generous margin keep this from
    flaking on a busy machine while still catching a missing dummy.
    """
    await add_user(db, settings)
    attempts = {
        "wrong": {"password": "wrong horse battery staple"},
        "unknown": {"username": "nobody@example.com"},
    }
    samples: dict[str, list[float]] = {kind: [] for kind in attempts}
    for round_ in range(17):
        for kind, overrides in attempts.items():
            started = time.perf_counter()
            response = await log_in(client, **overrides)
            elapsed = time.perf_counter() - started
            assert response.status_code == 401
            if round_ >= 2:  # the first rounds warm up pools and caches
                samples[kind].append(elapsed)

    wrong = statistics.median(samples["wrong"])
    unknown = statistics.median(samples["unknown"])
    print(f"login p50: wrong password {wrong * 1000:.1f} ms, unknown email {unknown * 1000:.1f} ms")
    assert abs(wrong - unknown) < 0.35 * max(wrong, unknown) + 0.005


async def test_an_unverified_account_gets_403_only_with_the_right_password(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings, verified=False)

    wrong = await log_in(client, password="wrong horse battery staple")
    right = await log_in(client)

    assert wrong.status_code == 401
    assert wrong.json() == INCORRECT
    assert right.status_code == 403
    assert right.json() == UNVERIFIED
    assert "access_token" not in right.text


async def test_once_verified_the_account_can_log_in(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(db, settings, verified=False)
    assert (await log_in(client)).status_code == 403

    await db.execute("UPDATE users SET email_verified_at = now() WHERE id = $1", user_id)

    assert (await log_in(client)).status_code == 200


@pytest.mark.parametrize(
    "form",
    [
        {"username": EMAIL},
        {"password": PASSWORD},
        {"username": EMAIL, "password": PASSWORD, "grant_type": "client_credentials"},
    ],
)
async def test_an_incomplete_or_other_grant_gets_422(
    client: httpx.AsyncClient, form: dict[str, str]
) -> None:
    response = await client.post(TOKEN_URL, data=form)

    assert response.status_code == 422
    assert PASSWORD not in response.text


# --- rehashing --------------------------------------------------------------------------------


async def test_a_weaker_hash_is_replaced_on_login(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    weak = argon2(settings, memory_cost=8_192, time_cost=1)
    user_id = await add_user(db, settings, hasher=weak)

    response = await log_in(client)

    assert response.status_code == 200
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    parameters = extract_parameters(stored)
    assert (parameters.memory_cost, parameters.time_cost) == (
        settings.argon2_memory_kib,
        settings.argon2_time_cost,
    )
    assert argon2(settings).verify(stored, PASSWORD)
    assert (await log_in(client)).status_code == 200


async def test_a_wrong_password_never_rehashes(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(db, settings, hasher=argon2(settings, time_cost=1))
    before = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)

    await log_in(client, password="wrong horse battery staple")

    assert await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id) == before


async def test_a_current_or_stronger_hash_is_kept(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    current = await add_user(db, settings)
    stronger = await add_user(
        db, settings, email="grace@example.com", hasher=argon2(settings, time_cost=3)
    )
    before = await db.fetch("SELECT id, password_hash FROM users ORDER BY id")

    assert (await log_in(client)).status_code == 200
    assert (await log_in(client, username="grace@example.com")).status_code == 200

    assert await db.fetch("SELECT id, password_hash FROM users ORDER BY id") == before
    assert {current, stronger} == {row["id"] for row in before}


async def test_an_unverified_accounts_weak_hash_is_upgraded_too(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(
        db, settings, verified=False, hasher=argon2(settings, memory_cost=8_192)
    )

    assert (await log_in(client)).status_code == 403

    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert extract_parameters(stored).memory_cost == settings.argon2_memory_kib


# --- access tokens ----------------------------------------------------------------------------


async def test_me_without_a_token_gets_401(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Basic YWRhOnBhc3N3b3Jk"}, {"Authorization": "Bearer"}):
        response = await client.get(ME_URL, headers=headers)

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "A valid access token is required."}


def bad_tokens(user_id: uuid.UUID, secret: str) -> dict[str, str]:
    """Tokens for ``user_id`` that are each wrong in one way (the key names how)."""
    key = secret.encode()
    now = int(time.time())
    good = jwt.encode(claims_for(user_id), secret, algorithm="HS256")
    header, payload, signature = good.split(".")
    other = b64(json.dumps(claims_for(uuid.uuid4())).encode())
    with warnings.catch_warnings(action="ignore", category=jwt.InsecureKeyLengthWarning):
        hs512 = jwt.encode(claims_for(user_id), secret, algorithm="HS512")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    return {
        "garbage": "not-a-jwt",
        "expired": jwt.encode(
            claims_for(user_id, iat=now - 1000, exp=now - 60), secret, algorithm="HS256"
        ),
        "issued in the future": jwt.encode(
            claims_for(user_id, iat=now + 3600, exp=now + 4500), secret, algorithm="HS256"
        ),
        "tampered signature": f"{header}.{payload}.{flipped}",
        "tampered claims": f"{header}.{other}.{signature}",
        "other key": jwt.encode(claims_for(user_id), "x" * 40, algorithm="HS256"),
        "alg none": hand_made_token({"alg": "none", "typ": "JWT"}, claims_for(user_id), None),
        "alg None, signed": hand_made_token({"alg": "None"}, claims_for(user_id), key),
        "HS512, same key": hs512,
        "RS256 header, HMAC signature": hand_made_token(
            {"alg": "RS256", "typ": "JWT"}, claims_for(user_id), key
        ),
        "wrong audience": jwt.encode(
            claims_for(user_id, aud="someone-else"), secret, algorithm="HS256"
        ),
        "audience list": jwt.encode(
            claims_for(user_id, aud=["herald-api", "someone-else"]), secret, algorithm="HS256"
        ),
        "wrong issuer": jwt.encode(
            claims_for(user_id, iss="someone-else"), secret, algorithm="HS256"
        ),
        "no exp": jwt.encode(claims_for(user_id, exp=None), secret, algorithm="HS256"),
        "no iat": jwt.encode(claims_for(user_id, iat=None), secret, algorithm="HS256"),
        "no sub": jwt.encode(claims_for(user_id, sub=None), secret, algorithm="HS256"),
        "no aud": jwt.encode(claims_for(user_id, aud=None), secret, algorithm="HS256"),
        "no jti": jwt.encode(claims_for(user_id, jti=None), secret, algorithm="HS256"),
        "no ver": jwt.encode(claims_for(user_id, ver=None), secret, algorithm="HS256"),
        "ver of an earlier password": jwt.encode(
            claims_for(user_id, ver=-1), secret, algorithm="HS256"
        ),
        "ver not a number": jwt.encode(claims_for(user_id, ver="0"), secret, algorithm="HS256"),
        "ver true": jwt.encode(claims_for(user_id, ver=True), secret, algorithm="HS256"),
        "sub not a user id": jwt.encode(
            claims_for(user_id, sub="ada@example.com"), secret, algorithm="HS256"
        ),
    }


@pytest.mark.parametrize("kind", list(bad_tokens(uuid.uuid4(), "k" * 32)))
async def test_a_bad_token_gets_401(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, secret: str, kind: str
) -> None:
    user_id = await add_user(db, settings)
    token = bad_tokens(user_id, secret)[kind]

    response = await client.get(ME_URL, headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == {"detail": "A valid access token is required."}


async def test_a_hand_made_token_with_the_right_key_is_accepted(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, secret: str
) -> None:
    """The control of the test above: its tokens fail for their flaw alone."""
    user_id = await add_user(db, settings)
    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims_for(user_id), secret.encode())

    response = await client.get(ME_URL, headers=bearer(token))

    assert response.status_code == 200
    assert response.json()["id"] == str(user_id)


async def test_the_token_of_a_deleted_user_gets_401(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    user_id = await add_user(db, settings)
    token = (await log_in(client)).json()["access_token"]

    await db.execute("DELETE FROM users WHERE id = $1", user_id)
    response = await client.get(ME_URL, headers=bearer(token))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_a_token_expires_after_its_ttl(
    client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings, secret: str
) -> None:
    user_id = await add_user(db, settings)
    issued = datetime.now(UTC) - timedelta(seconds=settings.access_token_ttl_seconds + 6)
    token = jwt.encode(
        claims_for(
            user_id,
            iat=int(issued.timestamp()),
            exp=int(issued.timestamp()) + settings.access_token_ttl_seconds,
        ),
        secret,
        algorithm="HS256",
    )

    response = await client.get(ME_URL, headers=bearer(token))

    assert response.status_code == 401


# --- secrets stay out of logs -----------------------------------------------------------------


async def test_no_password_hash_or_token_is_logged(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    settings: Settings,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    weak = argon2(settings, time_cost=1)
    user_id = await add_user(db, settings, hasher=weak)
    await add_user(db, settings, email="grace@example.com", verified=False)
    old_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    caplog.set_level("DEBUG")

    with capture_logs() as logs:
        ok = await log_in(client)  # succeeds and rehashes
        token = ok.json()["access_token"]
        await client.get(ME_URL, headers=bearer(token))
        await client.get(ME_URL, headers=bearer(token + "x"))
        await log_in(client, password="wrong horse battery staple")
        await log_in(client, username="nobody@example.com")
        await log_in(client, username="grace@example.com")

    new_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert new_hash != old_hash
    events = [entry["event"] for entry in logs]
    assert events.count("login.succeeded") == 1
    assert "login.rehashed" in events
    assert events.count("login.failed") == 2
    assert "login.refused" in events
    assert "access_token.rejected" in events
    logged = repr(logs) + caplog.text
    never_logged = [
        PASSWORD,
        "wrong horse battery staple",
        old_hash,
        new_hash,
        "$argon2",
        token,
        token.split(".")[2],
        secret,
    ]
    for value in never_logged:
        assert value not in logged


# --- rate limits and the contract -------------------------------------------------------------


@pytest.fixture
async def limited_client(
    settings: Settings, open_client: OpenClient
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose login limit per email address is 2 a minute."""
    limited = settings.model_copy(
        update={"rate_limits_enabled": True, "rate_limit_login_per_email": "2/minute"}
    )
    async with open_client(limited) as http:
        yield http


async def test_logins_are_rate_limited_per_email(
    limited_client: httpx.AsyncClient, db: asyncpg.Connection, settings: Settings
) -> None:
    await add_user(db, settings)

    answers = [await log_in(limited_client, password="wrong horse battery staple")]
    answers.append(await log_in(limited_client))
    # Case and spaces do not make a new budget.
    refused = await log_in(limited_client, username=" ADA@example.com")
    other = await log_in(limited_client, username="nobody@example.com")

    assert [a.status_code for a in answers] == [401, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert other.status_code == 401


async def test_every_answer_is_declared_in_the_openapi_schema(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()

    login = schema["paths"][TOKEN_URL]["post"]["responses"]
    me = schema["paths"][ME_URL]["get"]["responses"]
    assert {"200", "400", "401", "403", "413", "422", "429", "503"} <= set(login)
    assert {"200", "401", "503"} <= set(me)

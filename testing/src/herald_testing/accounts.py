"""Accounts for the API's tests: a verified user inserted as signup and verification
leave it, logging it in, and using its tokens."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import httpx
from argon2 import PasswordHasher, Type

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"
ME_URL = "/api/v1/users/me"


class Argon2Settings(Protocol):
    """The API's argon2id parameters (``herald_api.core.settings.Settings`` has them)."""

    @property
    def argon2_memory_kib(self) -> int: ...
    @property
    def argon2_time_cost(self) -> int: ...
    @property
    def argon2_parallelism(self) -> int: ...


def argon2(
    settings: Argon2Settings, *, memory_cost: int | None = None, time_cost: int | None = None
) -> PasswordHasher:
    """An argon2id hasher with the API's parameters (``settings``), or weaker/stronger
    ones where given."""
    return PasswordHasher(
        memory_cost=memory_cost or settings.argon2_memory_kib,
        time_cost=time_cost or settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )


async def add_user(
    db: asyncpg.Connection,
    settings: Argon2Settings,
    *,
    email: str = EMAIL,
    password: str = PASSWORD,
    display_name: str = "Ada Lovelace",
    verified: bool = True,
    hasher: PasswordHasher | None = None,
) -> uuid.UUID:
    """Insert a user directly, as signup (and, if ``verified``, verification) would
    leave it; its id."""
    user_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO users (id, email, display_name, password_hash, email_verified_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        user_id,
        email,
        display_name,
        (hasher or argon2(settings)).hash(password),
        datetime.now(UTC) if verified else None,
    )
    return user_id


async def log_in(
    client: httpx.AsyncClient,
    *,
    email: str = EMAIL,
    password: str = PASSWORD,
    user_agent: str | None = None,
) -> dict[str, str]:
    """Log in (asserting 200): the answer's body, the access and refresh tokens."""
    headers = {} if user_agent is None else {"User-Agent": user_agent}
    response = await client.post(
        TOKEN_URL, data={"username": email, "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of an access token."""
    return {"Authorization": f"Bearer {token}"}


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    """``POST /api/v1/auth/refresh`` with ``refresh_token`` in the body."""
    return await client.post(REFRESH_URL, json={"refresh_token": refresh_token})


async def me(client: httpx.AsyncClient, access_token: str) -> int:
    """The status ``GET /api/v1/users/me`` answers ``access_token`` with."""
    return (await client.get(ME_URL, headers=bearer(access_token))).status_code
